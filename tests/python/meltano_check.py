"""Real Meltano, real target-jsonl: examples/meltano/meltano.yml runs
`meltano run tap-loop target-jsonl` against the fake Loop API twice, the fake's data changed
in between, the second run incremental from Meltano's own state store. Then the JSONL files
are compared with the fake's data:

* run 1 holds every record of every stream, once;
* run 2 holds exactly the changed versions of the incremental streams (every mutated record
  at its new version, nothing else: no repeat at the cursor boundary) and the full tables;
* Meltano's stored state is Singer bookmarks;
* `meltano invoke tap-loop` (the tap as Meltano runs it) passes singer-check-tap.

Needs: MELTANO (the meltano executable of the venv scripts/test.sh made), MELTANO_SYS_DIR_ROOT
(where `meltano install` keeps target-jsonl's venv: a cache), TAP_LOOP_BIN, FAKE_LOOP_BIN;
optional SINGER_CHECK_TAP (singer-tools' singer-check-tap). Every wait is bounded.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakeloop import FAST_RATE_LIMITS, SETTLE_SECONDS, TOKEN, FakeLoop, find_binary  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PROJECT = REPO / "examples" / "meltano"
STATE_ID = "dev:tap-loop-to-target-jsonl"
KEYS = {"products": "shopifyId"}
CURSORS = {"subscriptions": "updatedAt", "orders": "updatedAt", "activity_logs": "createdAt"}
FULL_TABLES = ["customers", "products"]
STREAMS = list(CURSORS) + FULL_TABLES
COUNTS = {"subscriptions": 260, "orders": 180, "customers": 40, "products": 12, "activity_logs": 120}
RUN_TIMEOUT = 300

failures: list[str] = []
passed = 0


def check(ok: bool, what: str) -> None:
    global passed
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if ok:
        passed += 1
    else:
        failures.append(what)


def ms(s: str) -> int:
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


def version(stream: str, r: dict) -> tuple:
    key = r[KEYS.get(stream, "id")]
    cursor = CURSORS.get(stream)
    return (str(key), ms(r[cursor]) if cursor else None)


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def meltano(env: dict, cwd: Path, *args: str, capture: bool = False) -> subprocess.CompletedProcess:
    cmd = [env["MELTANO"], *args]
    print("$ meltano " + " ".join(args), flush=True)
    p = subprocess.run(cmd, cwd=cwd, env=env, timeout=RUN_TIMEOUT, text=True,
                       stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None)
    if p.returncode != 0:
        if capture:
            sys.stderr.write((p.stderr or "")[-4000:])
        sys.exit(f"meltano {' '.join(args)} exited {p.returncode}")
    return p


def settings_match_about(tap: Path) -> None:
    """meltano.yml's settings are tap settings, with the secret ones as passwords."""
    about = json.loads(subprocess.run([str(tap), "--about", "--format", "json"], check=True,
                                      capture_output=True, text=True, timeout=30).stdout)
    by_name = {s["name"]: s for s in about["settings"]}
    check(set(about["capabilities"]) >= {"catalog", "discover", "state", "about"},
          f"--about lists the capabilities meltano.yml declares: {about['capabilities']}")
    text = (PROJECT / "meltano.yml").read_text()
    # the extractor's settings block (no YAML parser in the standard library: a small reader)
    block = text.split("- name: tap-loop", 1)[1].split("select:", 1)[0]
    names, kinds, current = [], {}, None
    for line in block.splitlines():
        s = line.strip()
        if s.startswith("- name:") and line.startswith("        - name:"):
            current = s.split(":", 1)[1].strip()
            names.append(current)
        elif s.startswith("kind:") and current:
            kinds[current] = s.split(":", 1)[1].strip()
    check(bool(names) and all(n in by_name for n in names),
          f"every meltano.yml setting is a tap setting: {[n for n in names if n not in by_name]} unknown")
    secret = [n for n in names if by_name.get(n, {}).get("secret")]
    check(bool(secret) and all(kinds.get(n) == "password" for n in secret),
          f"secret settings {secret} are kind: password in meltano.yml")


def main() -> None:
    tap = find_binary("tap-loop", "TAP_LOOP_BIN")
    fake_bin = find_binary("fake-loop", "FAKE_LOOP_BIN")
    if not os.environ.get("MELTANO") or not os.environ.get("MELTANO_SYS_DIR_ROOT"):
        sys.exit("set MELTANO (the meltano executable) and MELTANO_SYS_DIR_ROOT (a cache directory)")
    settings_match_about(tap)
    work = Path(tempfile.mkdtemp(prefix="meltano-check."))
    try:
        project = work / "project"
        shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns(".meltano", "output"))
        with FakeLoop(fake_bin, counts=COUNTS) as fake:
            env = dict(os.environ)
            env.update({
                "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
                "MELTANO_DISABLE_TRACKING": "true",
                # Meltano's state store for this test only (a fresh system database)
                "MELTANO_DATABASE_URI": f"sqlite:///{work / 'meltano.db'}",
                # the executable: tap-loop on PATH, as meltano.yml says
                "PATH": f"{tap.parent}{os.pathsep}{env.get('PATH', '')}",
                "TAP_LOOP_API_TOKEN": TOKEN,
                "TAP_LOOP_BASE_URL": fake.base_url,
                "TAP_LOOP_START_DATE": "2000-01-01T00:00:00Z",
                "TAP_LOOP_RATE_LIMITS": json.dumps(FAST_RATE_LIMITS),
                # several pages and windows per stream, and a STATE every 25 records
                "TAP_LOOP_PAGE_SIZE": "10",
                "TAP_LOOP_CHECKPOINT_INTERVAL_RECORDS": "25",
            })
            meltano(env, project, "install")

            # run 1: a first sync
            env["TARGET_JSONL_DESTINATION_PATH"] = str(work / "out1")
            (work / "out1").mkdir()
            meltano(env, project, "run", "tap-loop", "target-jsonl")
            out1 = {s: read_jsonl(work / "out1" / f"{s}.jsonl") for s in STREAMS}
            for s in STREAMS:
                want = {version(s, r) for r in fake.records(s)}
                got = [version(s, r) for r in out1[s]]
                check(set(got) == want and len(got) == len(want),
                      f"run 1: {s}: {len(got)} records, the fake's {len(want)} (each once)")

            state = json.loads(meltano(env, project, "state", "get", STATE_ID, capture=True).stdout)
            bookmarks = state.get("singer_state", {}).get("bookmarks", {})
            check(set(bookmarks) == set(CURSORS)
                  and all(bookmarks[s]["replication_key"] == CURSORS[s]
                          and bookmarks[s]["replication_key_value"].endswith("Z") for s in CURSORS),
                  f"Meltano stored Singer bookmarks for {sorted(bookmarks)}")

            # change the fake's data between the runs
            changed: dict[str, list[dict]] = {s: [] for s in STREAMS}
            for stream, kind, n in [("subscriptions", "touch", 9), ("subscriptions", "create", 4),
                                    ("orders", "touch", 6), ("activity_logs", "create", 5),
                                    ("customers", "touch", 3)]:
                changed[stream] += fake.mutate({kind: {"stream": stream, "count": n}}) or []
            time.sleep(SETTLE_SECONDS)

            # run 2: incremental from Meltano's state
            env["TARGET_JSONL_DESTINATION_PATH"] = str(work / "out2")
            (work / "out2").mkdir()
            meltano(env, project, "run", "tap-loop", "target-jsonl")
            out2 = {s: read_jsonl(work / "out2" / f"{s}.jsonl") for s in STREAMS}
            for s in CURSORS:
                want = {version(s, r) for r in changed[s]}
                got = [version(s, r) for r in out2[s]]
                check(len(want) > 0 and set(got) == want and len(got) == len(want),
                      f"run 2: {s}: exactly the {len(want)} changed versions, each once (got {len(got)})")
            for s in FULL_TABLES:
                want = {version(s, r) for r in fake.records(s)}
                got = [version(s, r) for r in out2[s]]
                check(set(got) == want and len(got) == len(want), f"run 2: {s}: the full table again")
            # nothing lost: the newest version of every record is in one of the two runs
            for s in CURSORS:
                newest: dict[str, int] = {}
                for k, t in (version(s, r) for r in out1[s] + out2[s]):
                    newest[k] = max(t, newest.get(k, t))
                fake_now = {k: t for k, t in (version(s, r) for r in fake.records(s))}
                check(newest == fake_now, f"runs 1+2: {s}: every record at its current version")

            # the tap as Meltano invokes it (config, catalog, state), through singer-check-tap
            checker = os.environ.get("SINGER_CHECK_TAP")
            if checker:
                fake.mutate({"touch": {"stream": "subscriptions", "count": 3}})
                time.sleep(SETTLE_SECONDS)
                out = meltano(env, project, "invoke", "tap-loop", capture=True).stdout
                (work / "tap.out").write_text(out)
                p = subprocess.run([checker], stdin=open(work / "tap.out"), capture_output=True,
                                   text=True, timeout=120)
                print(p.stdout[-1500:])
                check(p.returncode == 0, f"singer-check-tap accepts the tap's output ({len(out.splitlines())} lines)")
                last = [json.loads(line) for line in out.splitlines() if line.strip()][-1]
                check(last["type"] == "STATE", "the last message is a STATE")
            else:
                print("note: SINGER_CHECK_TAP not set: singer-check-tap skipped")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"meltano: {passed} passed, {len(failures)} failed")
    if failures:
        sys.exit(f"failed: {failures}")


if __name__ == "__main__":
    main()
