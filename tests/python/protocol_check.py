#!/usr/bin/env python3
"""End-to-end Airbyte protocol check of the source-loop binary against fake-loop.

Runs spec, check (right and wrong token), discover, a full read, and an incremental read from
the last STATE after touching records through the fake's control API. Every line every
command prints goes through validate_messages (airbyte-cdk and pydantic protocol models);
then the contents are checked against what the fake holds.

    protocol_check.py [--source-loop PATH] [--fake-loop PATH] [--keep DIR]

Binaries default to $SOURCE_LOOP_BIN / $FAKE_LOOP_BIN, else $CARGO_TARGET_DIR/release, else
target/release. Prints "N passed, N failed" at the end; exit 1 on any failure.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jsonschema

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakeloop import API_STREAMS, SETTLE_SECONDS, FakeLoop, find_binary  # noqa: E402
from validate_messages import Report, validate_lines  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "catalog" / "configured_catalog.json"
COUNTS = {"subscriptions": 120, "orders": 90, "customers": 40, "products": 15, "activity_logs": 60}
TOUCHED = 5
CMD_TIMEOUT = 180


class Checker:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def ok(self, cond: bool, what: str, detail: str = "") -> bool:
        if cond:
            self.passed += 1
            print(f"  ok   {what}")
        else:
            self.failed += 1
            print(f"  FAIL {what}{': ' + detail if detail else ''}")
        return cond


def run(binary: Path, args: list[str], workdir: Path, name: str) -> tuple[int, Report, Path]:
    out = workdir / f"{name}.jsonl"
    err = workdir / f"{name}.stderr"
    t0 = time.monotonic()
    with out.open("w") as o, err.open("w") as e:
        try:
            rc = subprocess.run([str(binary), *args], stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                timeout=CMD_TIMEOUT, cwd=workdir).returncode
        except subprocess.TimeoutExpired:
            rc = -999
    dt = time.monotonic() - t0
    with out.open() as f:
        rep = validate_lines((out.name, n, line) for n, line in enumerate(f, 1))
    types = " ".join(f"{k}={v}" for k, v in sorted(rep.types.items()))
    print(f"$ source-loop {' '.join(args)}  -> exit {rc} in {dt:.1f}s; {rep.lines} lines: {types}")
    if rc != 0 or rep.errors:
        tail = err.read_text(errors="replace").strip().splitlines()[-15:]
        for line in tail:
            print(f"    stderr| {line}")
    return rc, rep, out


def no_protocol_errors(c: Checker, rep: Report, what: str) -> None:
    c.ok(not rep.errors, f"{what}: every line is a valid Airbyte message",
         "; ".join(rep.errors[:5]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source-loop", type=Path)
    ap.add_argument("--fake-loop", type=Path)
    ap.add_argument("--keep", type=Path, help="keep every command's output in this directory")
    a = ap.parse_args()
    src = a.source_loop or find_binary("source-loop", "SOURCE_LOOP_BIN")
    fake_bin = a.fake_loop or find_binary("fake-loop", "FAKE_LOOP_BIN")
    c = Checker()

    tmp = tempfile.TemporaryDirectory(prefix="source-loop-protocol-")
    work = a.keep or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    print(f"source-loop: {src}\nfake-loop:   {fake_bin}\noutputs:     {work}")

    with FakeLoop(fake_bin, COUNTS) as fake:
        print(f"fake-loop at {fake.base_url}")
        cfg_path = work / "config.json"
        cfg_path.write_text(json.dumps(fake.config(), indent=2))
        bad_cfg = work / "config_bad_token.json"
        bad_cfg.write_text(json.dumps(fake.config(token="wrong-token"), indent=2))
        truth = {s: fake.records(s) for s in API_STREAMS}
        print("fake holds: " + " ".join(f"{s}={len(v)}" for s, v in truth.items()))

        # spec
        rc, rep, _ = run(src, ["spec"], work, "spec")
        c.ok(rc == 0, "spec exits 0", f"exit {rc}")
        no_protocol_errors(c, rep, "spec")
        specs = rep.by_type("SPEC")
        c.ok(len(specs) == 1 and set(rep.types) <= {"SPEC", "LOG"}, "spec prints one SPEC message",
             str(dict(rep.types)))
        if specs:
            schema = specs[0]["spec"]["connectionSpecification"]
            try:
                jsonschema.validate(json.loads(cfg_path.read_text()), schema)
                c.ok(True, "test config validates against connectionSpecification")
            except jsonschema.ValidationError as e:
                c.ok(False, "test config validates against connectionSpecification", e.message)
            req = schema.get("required", [])
            c.ok("api_token" in req, "connectionSpecification requires api_token", str(req))
            props = schema.get("properties", {})
            c.ok(props.get("api_token", {}).get("airbyte_secret") is True,
                 "api_token is marked airbyte_secret")
            spec_file = REPO / "spec.json"
            if spec_file.exists():
                # spec.json may hold the whole ConnectorSpecification or just its connectionSpecification
                on_disk = json.loads(spec_file.read_text())
                c.ok(on_disk in (specs[0]["spec"], schema),
                     "spec.json in the repo equals the binary's spec (or its connectionSpecification)")

        # check
        rc, rep, _ = run(src, ["check", "--config", str(cfg_path)], work, "check")
        c.ok(rc == 0, "check exits 0", f"exit {rc}")
        no_protocol_errors(c, rep, "check")
        c.ok(rep.statuses == ["SUCCEEDED"], "check reports SUCCEEDED", str(rep.statuses))

        rc, rep, out = run(src, ["check", "--config", str(bad_cfg)], work, "check_bad_token")
        c.ok(rc == 0, "check with a wrong token exits 0", f"exit {rc}")
        no_protocol_errors(c, rep, "check (wrong token)")
        c.ok(rep.statuses == ["FAILED"], "check with a wrong token reports FAILED", str(rep.statuses))
        c.ok("wrong-token" not in out.read_text(), "the token is not echoed in check output")

        # discover
        rc, rep, _ = run(src, ["discover", "--config", str(cfg_path)], work, "discover")
        c.ok(rc == 0, "discover exits 0", f"exit {rc}")
        no_protocol_errors(c, rep, "discover")
        cats = rep.by_type("CATALOG")
        c.ok(len(cats) == 1, "discover prints one CATALOG message")
        discovered = {s["name"]: s for s in cats[0]["catalog"]["streams"]} if cats else {}
        c.ok(set(API_STREAMS) <= set(discovered), "catalog has the five API streams",
             str(sorted(discovered)))
        configured = json.loads(CATALOG.read_text())
        for cs in configured["streams"]:
            name = cs["stream"]["name"]
            d = discovered.get(name)
            if not d:
                continue
            c.ok(cs["sync_mode"] in d.get("supported_sync_modes", []),
                 f"{name}: configured sync_mode {cs['sync_mode']} is supported",
                 str(d.get("supported_sync_modes")))
            c.ok(d.get("source_defined_primary_key") == cs["primary_key"],
                 f"{name}: primary key {cs['primary_key']}", str(d.get("source_defined_primary_key")))
            if cs["sync_mode"] == "incremental":
                c.ok(d.get("default_cursor_field") == cs["cursor_field"],
                     f"{name}: cursor {cs['cursor_field']}", str(d.get("default_cursor_field")))

        # full read
        rc, rep, _ = run(src, ["read", "--config", str(cfg_path), "--catalog", str(CATALOG)], work,
                         "read_full")
        c.ok(rc == 0, "full read exits 0", f"exit {rc}")
        no_protocol_errors(c, rep, "full read")
        c.ok(not rep.trace_errors, "full read emits no TRACE errors", json.dumps(rep.trace_errors)[:300])
        for s in API_STREAMS:
            c.ok(rep.records.get(s, 0) == len(truth[s]), f"full read: {s} has {len(truth[s])} records",
                 f"got {rep.records.get(s, 0)}")
        ids = {s: [r["record"]["data"].get("shopifyId" if s == "products" else "id")
                   for r in rep.by_type("RECORD") if r["record"]["stream"] == s] for s in API_STREAMS}
        for s in API_STREAMS:
            c.ok(len(ids[s]) == len(set(ids[s])), f"full read: {s} has no duplicate primary keys")
        # records conform to the discovered schemas
        bad = []
        for r in rep.by_type("RECORD"):
            sch = discovered.get(r["record"]["stream"], {}).get("json_schema")
            if sch:
                try:
                    jsonschema.validate(r["record"]["data"], sch)
                except jsonschema.ValidationError as e:
                    bad.append(f"{r['record']['stream']}: {e.message} at {list(e.absolute_path)}")
        c.ok(not bad, "every record validates against its stream's discovered json_schema",
             f"{len(bad)} invalid, e.g. {bad[:3]}")
        state_streams = {k.split(":")[-1] for k in rep.last_states if k.startswith("stream:")}
        incremental = [cs["stream"]["name"] for cs in configured["streams"] if cs["sync_mode"] == "incremental"]
        c.ok(set(incremental) <= state_streams, "full read: a STREAM state for each incremental stream",
             f"states for {sorted(state_streams)}")
        state1 = work / "state_after_full.json"
        state1.write_text(json.dumps(rep.state_for_next_read(), indent=2))

        # incremental read with no changes
        rc, rep, _ = run(src, ["read", "--config", str(cfg_path), "--catalog", str(CATALOG),
                               "--state", str(state1)], work, "read_incremental_nochange")
        c.ok(rc == 0, "incremental read (no changes) exits 0", f"exit {rc}")
        no_protocol_errors(c, rep, "incremental read (no changes)")
        for s in incremental:
            c.ok(rep.records.get(s, 0) < len(truth[s]),
                 f"no changes: {s} re-reads only boundary records", f"got {rep.records.get(s, 0)}")

        # mutate, then incremental read from the full read's state
        before = {r["id"]: r.get("updatedAt") for r in truth["subscriptions"]}
        resp = fake.mutate({"touch": {"stream": "subscriptions", "count": TOUCHED}})
        print(f"mutate touch subscriptions x{TOUCHED} -> {json.dumps(resp)[:200]}")
        after = fake.records("subscriptions")
        touched = {r["id"] for r in after if before.get(r["id"]) != r.get("updatedAt")}
        if isinstance(resp, list):  # the fake answers with the new versions of the touched records
            c.ok({r.get("id") for r in resp} == touched, "the fake's mutate answer names the changed records")
        c.ok(len(touched) == TOUCHED, f"the fake changed updatedAt of {TOUCHED} subscriptions",
             f"changed {len(touched)}")
        time.sleep(SETTLE_SECONDS)
        rc, rep, _ = run(src, ["read", "--config", str(cfg_path), "--catalog", str(CATALOG),
                               "--state", str(state1)], work, "read_incremental")
        c.ok(rc == 0, "incremental read exits 0", f"exit {rc}")
        no_protocol_errors(c, rep, "incremental read")
        got = {r["record"]["data"]["id"] for r in rep.by_type("RECORD") if r["record"]["stream"] == "subscriptions"}
        c.ok(touched <= got, "incremental read returns every touched subscription",
             f"missing {sorted(map(str, touched - got))[:5]}")
        c.ok(len(got) < len(after), "incremental read does not re-read all subscriptions",
             f"{len(got)} of {len(after)}")
        print(f"  incremental: {len(got)} subscriptions back, {len(touched)} touched, "
              f"{len(got - touched)} boundary")
        for s in ("customers", "products"):
            c.ok(rep.records.get(s, 0) == len(truth[s]), f"incremental read: full-refresh {s} read in full",
                 f"got {rep.records.get(s, 0)}")
        new_states = {k.split(":")[-1] for k in rep.last_states if k.startswith("stream:")}
        c.ok(set(incremental) <= new_states, "incremental read: a STREAM state for each incremental stream",
             f"states for {sorted(new_states)}")

        # bad inputs fail cleanly: unknown catalog file
        rc, rep, _ = run(src, ["read", "--config", str(cfg_path), "--catalog", str(work / "missing.json")],
                         work, "read_missing_catalog")
        c.ok(rc != 0, "read with a missing catalog file exits non-zero", f"exit {rc}")
        no_protocol_errors(c, rep, "read with a missing catalog file")

    print(f"protocol: {c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
