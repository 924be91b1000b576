#!/usr/bin/env python3
"""Run source-loop under PyAirbyte, offline, into a DuckDB cache, against fake-loop.

1. get_source("source-loop", local_executable=...), check(), select_all_streams(), read()
   into a fresh DuckDB cache in a temp dir; every API stream's table must hold exactly the
   fake's records.
2. Touch 5 subscriptions and create 3 orders through the fake's control API, read again:
   PyAirbyte hands the connector the state it kept in the cache, so the second read is
   incremental. The write method PyAirbyte picks per stream (AUTO: MERGE when the stream has a
   primary key, APPEND when it has only a cursor, else REPLACE) says what each table must hold:
   with MERGE, exactly the fake's records again, one row per key.

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakeloop import API_STREAMS, SETTLE_SECONDS, FakeLoop, find_binary  # noqa: E402

COUNTS = {"subscriptions": 80, "orders": 60, "customers": 30, "products": 12, "activity_logs": 40}
PK = {"products": "shopifyId"}


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
            cache.close() if hasattr(cache, "close") else None

    except Exception:
        traceback.print_exc()
        failed += 1
        print("  FAIL PyAirbyte run raised; the last lines of its logs:")
        for log in sorted((root / "logs").rglob("*.log")):
            print(f"  --- {log.name}")
            for line in log.read_text(errors="replace").splitlines()[-25:]:
                print(f"    {line}")
    print(f"pyairbyte: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
