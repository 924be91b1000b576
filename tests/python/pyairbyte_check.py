#!/usr/bin/env python3
"""Run source-loop under PyAirbyte, offline, into a DuckDB cache, against fake-loop.

1. get_source("source-loop", local_executable=...), check(), select_all_streams(), read()
   into a fresh DuckDB cache in a temp dir; every API stream's table must hold exactly the
   fake's records.
2. Typed columns: every top-level field the discovered schema types `number` (money) is a
   DECIMAL column, every `integer` (ids, counts) a BIGINT/INTEGER one (products' primary key
   shopifyId included), and SUM(totalPrice) of orders and SUM(totalLineItemPrice) of
   subscriptions per currency equal the sums of the fake's own decimal strings (Python's
   Decimal), to the cent. PyAirbyte prints "Could not determine airbyte type ..." for every
   schema type it cannot map (a union such as ["string","number","null"]); none may appear.
3. Touch 5 subscriptions and create 3 orders through the fake's control API, read again:
   PyAirbyte hands the connector the state it kept in the cache, so the second read is
   incremental. The write method PyAirbyte picks per stream (AUTO: MERGE when the stream has a
   primary key, APPEND when it has only a cursor, else REPLACE) says what each table must hold:
   with MERGE, exactly the fake's records again, one row per key; the sums hold again.

Offline: AIRBYTE_OFFLINE_MODE=1 (set before `import airbyte`) makes PyAirbyte skip the
connector registry and telemetry; local_executable needs no install.
Prints "N passed, N failed" at the end; exit 1 on any failure.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakeloop import API_STREAMS, SETTLE_SECONDS, FakeLoop, find_binary  # noqa: E402

COUNTS = {"subscriptions": 80, "orders": 60, "customers": 30, "products": 12, "activity_logs": 40}
PK = {"products": "shopifyId"}
# amounts summed per currency in the cache and in the fake
SUMS = {"orders": "totalPrice", "subscriptions": "totalLineItemPrice"}
# what PyAirbyte prints (rich, on stdout) for a schema type it cannot map to a column type
TYPE_WARNINGS = ("Could not determine airbyte type", "Could not find SQL type")
INTEGER_TYPES = {"BIGINT", "INTEGER", "HUGEINT"}


class CountingStream:
    """Passes writes through to `inner` and keeps the text, to count PyAirbyte's warnings."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.text: list[str] = []

    def write(self, s: str) -> int:
        self.text.append(s)
        return self.inner.write(s)

    def count(self, phrases: tuple[str, ...]) -> int:
        text = "".join(self.text)
        return sum(text.count(p) for p in phrases)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def schema_type(prop: dict) -> str | None:
    """The one non-null JSON Schema type of a property, None if it has several (a union)."""
    t = prop.get("type")
    types = [x for x in (t if isinstance(t, list) else [t]) if x and x != "null"]
    return types[0] if len(types) == 1 else None


def fake_sums(records: list[dict], field: str) -> dict[str, Decimal]:
    """Exact sums of the fake's decimal strings per currencyCode."""
    sums: dict[str, Decimal] = {}
    for r in records:
        if r.get(field) is not None:
            cur = r.get("currencyCode")
            sums[cur] = sums.get(cur, Decimal(0)) + Decimal(str(r[field]))
    return sums


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source-loop", type=Path)
    ap.add_argument("--fake-loop", type=Path)
    ap.add_argument("--streams", help="comma-separated streams to select instead of all (for debugging)")
    a = ap.parse_args()
    src = a.source_loop or find_binary("source-loop", "SOURCE_LOOP_BIN")
    fake_bin = a.fake_loop or find_binary("fake-loop", "FAKE_LOOP_BIN")

    tmp = tempfile.TemporaryDirectory(prefix="source-loop-pyairbyte-")
    root = Path(tmp.name)
    # All of PyAirbyte's files go to the temp dir; no registry, no telemetry.
    os.environ["AIRBYTE_OFFLINE_MODE"] = "1"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["AIRBYTE_PROJECT_DIR"] = str(root)
    os.environ["AIRBYTE_CACHE_ROOT"] = str(root / ".cache")
    os.environ["AIRBYTE_TEMP_DIR"] = str(root / "tmp")
    (root / "tmp").mkdir()
    os.environ["AIRBYTE_LOGGING_ROOT"] = str(root / "logs")
    os.environ["TZ"] = "UTC"  # DuckDB renders timestamps in the session time zone
    time.tzset()
    os.environ.setdefault("NO_COLOR", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    # count what PyAirbyte prints (its type warnings go to the console) and Python warnings
    out = CountingStream(sys.stdout)
    sys.stdout = out
    py_warnings: list[str] = []
    show = warnings.showwarning

    def count_warning(message, category, *args, **kwargs):
        py_warnings.append(f"{category.__name__}: {message}")
        show(message, category, *args, **kwargs)

    warnings.showwarning = count_warning

    import airbyte as ab  # noqa: E402  (after the environment is set)
    from airbyte.strategies import WriteStrategy  # noqa: E402

    passed = failed = 0

    def ok(cond: bool, what: str, detail: str = "") -> None:
        nonlocal passed, failed
        if cond:
            passed += 1
            print(f"  ok   {what}")
        else:
            failed += 1
            print(f"  FAIL {what}{': ' + detail if detail else ''}")

    try:
        print(f"PyAirbyte {importlib.metadata.version('airbyte')}; source-loop: {src}")
        with FakeLoop(fake_bin, COUNTS) as fake:
            print(f"fake-loop at {fake.base_url}")
            source = ab.get_source("source-loop", local_executable=str(src), config=fake.config())
            source.check()
            ok(True, "source.check() succeeded")
            if a.streams:
                source.select_streams(a.streams.split(","))
            else:
                source.select_all_streams()
            streams = source.get_selected_streams()
            print(f"selected streams: {streams}")
            checked = [s for s in API_STREAMS if s in streams]
            ok(bool(a.streams) or set(API_STREAMS) <= set(streams), "all five API streams are selected", str(streams))

            cache = ab.new_local_cache("source_loop_check", cache_dir=root / "cache")
            provider = None

            def table_counts(stream: str) -> tuple[int, int]:
                table = cache.processor.get_sql_table_name(stream)
                fq = f"{cache.schema_name}.{table}"
                cols = [r["column_name"] for r in cache.run_sql_query(
                    f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}' "
                    f"AND table_schema = '{cache.schema_name}'")]
                pk_col = next((c for c in cols if c.lower() == PK.get(stream, "id").lower()), None)
                distinct = f"COUNT(DISTINCT {pk_col})" if pk_col else "COUNT(*)"
                row = cache.run_sql_query(f"SELECT COUNT(*) AS n, {distinct} AS u FROM {fq}")[0]
                return int(row["n"]), int(row["u"])

            def columns(stream: str) -> dict[str, str]:
                table = cache.processor.get_sql_table_name(stream)
                return {r["column_name"].lower(): r["data_type"] for r in cache.run_sql_query(
                    f"SELECT column_name, data_type FROM information_schema.columns "
                    f"WHERE table_name = '{table}' AND table_schema = '{cache.schema_name}'")}

            def check_column_types() -> None:
                for s in checked:
                    props = source.get_stream_json_schema(s)["properties"]
                    cols = columns(s)
                    money, ints, unions, wrong = [], [], [], []
                    for name, prop in props.items():
                        t, col = schema_type(prop), cols.get(name.lower())
                        if t is None:
                            unions.append(f"{name} {json.dumps(prop.get('type'))}")
                        elif t == "number":
                            money.append(f"{name} {col}")
                            if not (col or "").startswith(("DECIMAL", "NUMERIC")):
                                wrong.append(f"{name} (number) is {col}")
                        elif t == "integer":
                            ints.append(f"{name} {col}")
                            if col not in INTEGER_TYPES:
                                wrong.append(f"{name} (integer) is {col}")
                    print(f"  {s}: number fields: {', '.join(money) or '-'}; integer fields: {', '.join(ints)}")
                    ok(not unions, f"{s}: every field has one type (and null)", "; ".join(unions))
                    ok(not wrong, f"{s}: {len(money)} money fields are DECIMAL columns, {len(ints)} integer "
                       f"fields (ids, counts) are integer columns", "; ".join(wrong))
                if "products" in checked:
                    col = columns("products").get("shopifyid")
                    ok(col in INTEGER_TYPES, "products' primary key shopifyId is an integer column", f"{col}")
                if "orders" in checked:
                    money_cols = [c for c, t in columns("orders").items() if t.startswith("DECIMAL")]
                    ok({"totalprice", "totalpriceusd", "totaltax", "totaldiscount", "totalshippingprice"}
                       <= set(money_cols), "orders' five amounts are DECIMAL columns", str(money_cols))

            def check_sums(label: str) -> None:
                for s, field in SUMS.items():
                    if s not in checked:
                        continue
                    want = fake_sums(fake.records(s), field)
                    table = f"{cache.schema_name}.{cache.processor.get_sql_table_name(s)}"
                    try:
                        rows = cache.run_sql_query(
                            f"SELECT currencycode AS cur, CAST(SUM({field.lower()}) AS VARCHAR) AS total, "
                            f"typeof(SUM({field.lower()})) AS t FROM {table} GROUP BY currencycode ORDER BY 1")
                    except Exception as e:  # e.g. SUM of a VARCHAR column
                        ok(False, f"{label}: SUM({field}) of {s} in the cache", str(e).splitlines()[0])
                        continue
                    have = {r["cur"]: Decimal(r["total"]) for r in rows if r["total"] is not None}
                    print(f"  {label}: SUM({field}) of {s} per currency: cache "
                          f"{ {c: str(v) for c, v in have.items()} } ({rows[0]['t'] if rows else '-'}), "
                          f"fake { {c: str(v) for c, v in want.items()} }")
                    ok(bool(want) and have == want,
                       f"{label}: SUM({field}) of {s} per currency equals the fake's, to the cent",
                       f"cache {have} fake {want}")

            def read_counts(result) -> dict[str, int]:
                tracker = getattr(result, "_progress_tracker", None)
                return dict(getattr(tracker, "stream_read_counts", {}) or {})

            # first read: full
            result = source.read(cache=cache)
            provider = result._cache.processor.catalog_provider if hasattr(result, "_cache") else None
            got1 = read_counts(result)
            print(f"read 1 records per stream: {got1}")
            truth1 = {s: len(fake.records(s)) for s in API_STREAMS}
            before = {s: table_counts(s) for s in checked}
            for s in checked:
                n, u = before[s]
                print(f"  {s}: fake={truth1[s]} table rows={n} unique keys={u}")
                ok(n == truth1[s] and u == truth1[s], f"read 1: {s} table has the fake's {truth1[s]} records",
                   f"rows={n} unique={u}")
            check_column_types()
            check_sums("read 1")

            # mutate, second read (incremental from the cache's state)
            touched = fake.mutate({"touch": {"stream": "subscriptions", "count": 5}}) or []
            print("mutate:", json.dumps(touched)[:200])
            print("mutate:", json.dumps(fake.mutate({"create": {"stream": "orders", "count": 3}}))[:200])
            time.sleep(SETTLE_SECONDS)
            truth2 = {s: len(fake.records(s)) for s in API_STREAMS}
            ok(truth2["orders"] == truth1["orders"] + 3, "the fake created 3 orders",
               f"{truth1['orders']} -> {truth2['orders']}")
            result2 = source.read(cache=cache)
            got2 = read_counts(result2)
            print(f"read 2 records per stream: {got2}")
            if got2 and "subscriptions" in checked:
                ok(5 <= got2.get("subscriptions", 0) < truth2["subscriptions"],
                   "read 2 is incremental: subscriptions re-read are the 5 touched (+ boundary), not all",
                   f"{got2.get('subscriptions', 0)} of {truth2['subscriptions']}")
            if got2 and "orders" in checked:
                ok(3 <= got2.get("orders", 0) < truth2["orders"],
                   "read 2 is incremental: orders re-read are the 3 new (+ boundary), not all",
                   f"{got2.get('orders', 0)} of {truth2['orders']}")
            for s in checked:
                method = provider.resolve_write_method(s, WriteStrategy.AUTO).value if provider else "merge"
                n, u = table_counts(s)
                if method == "merge":
                    expect = truth2[s]
                elif method == "append":
                    expect = before[s][0] + got2.get(s, 0)
                else:  # replace
                    expect = got2.get(s, truth2[s])
                print(f"  {s}: write method={method} fake={truth2[s]} table rows={n} unique keys={u} expect rows={expect}")
                ok(n == expect, f"read 2: {s} table rows = {expect} ({method})", f"rows={n}")
                ok(u == truth2[s], f"read 2: {s} unique keys = fake's {truth2[s]}", f"unique={u}")
            if "subscriptions" in checked and touched:
                # the merged rows carry the touched records' new updatedAt
                table = f"{cache.schema_name}.{cache.processor.get_sql_table_name('subscriptions')}"
                want = {str(r["id"]): r["updatedAt"] for r in touched}
                rows = cache.run_sql_query(
                    f"SELECT CAST(id AS VARCHAR) AS id, CAST(updatedat AS VARCHAR) AS u FROM {table} "
                    f"WHERE CAST(id AS VARCHAR) IN ({', '.join(repr(i) for i in want)})")
                have = {r["id"]: r["u"] for r in rows}
                print(f"  touched subscriptions in the cache: {have}")
                ok(set(have) == set(want) and all(
                    have[i] and have[i][:19].replace(" ", "T") == want[i][:19] for i in want),
                   "read 2: the cache holds the touched subscriptions' new updatedAt",
                   f"want {want}")
            check_sums("read 2")
            cache.close() if hasattr(cache, "close") else None

    except Exception:
        traceback.print_exc()
        failed += 1
        print("  FAIL PyAirbyte run raised; the last lines of its logs:")
        for log in sorted((root / "logs").rglob("*.log")):
            print(f"  --- {log.name}")
            for line in log.read_text(errors="replace").splitlines()[-25:]:
                print(f"    {line}")
    type_warnings = out.count(TYPE_WARNINGS)
    print(f"PyAirbyte type warnings: {type_warnings}; Python warnings: {len(py_warnings)}")
    for w in sorted(set(py_warnings))[:10]:
        print(f"    {w[:200]}")
    ok(type_warnings == 0, "PyAirbyte printed no 'Could not determine airbyte type' warning",
       f"{type_warnings} of them")
    print(f"pyairbyte: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
