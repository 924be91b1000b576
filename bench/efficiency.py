#!/usr/bin/env python3
"""How close a sync gets to the minimum number of requests and to the rate-limited minimum
wall time: source-loop side by side with an Airbyte low-code (declarative YAML) source for
the same five endpoints, run by airbyte-cdk, in the same run and on the same fake Loop API.

One command (after `cargo build --release --workspace --bins`):

    python3 bench/efficiency.py                  # ~8 min: every scenario below
    python3 bench/efficiency.py --quick          # ~2 min: smaller data, no 1 000 000 store
    python3 bench/efficiency.py --json out.json --markdown out.md  # every number; README table
    python3 bench/efficiency.py --only jitter --runs 10 --no-declarative  # ~8 min: the jitter series

Options: --bin-dir DIR (fake-loop and source-loop; default $CARGO_TARGET_DIR/release, else
target/release), --scale F (time scale of Loop's rate limits, default 0.1), --no-declarative
(source-loop only: no venv), --no-new-flags (a fake-loop without --limiter, --distribution
and --retry-after rounded-up: run only the dimensions it has; without this switch such a
fake-loop is an error), --only first-sync|rate-limited|incremental|jitter (repeatable),
--timeout S (per sync, default 900), --runs N (syncs in a row per limiter kind in the jitter
series, default 10), --series-jitter on|off (repeatable: the series with the fake's
--jitter, without it, or both; default on).

It starts everything itself on 127.0.0.1 and talks to nothing else. The declarative source
runs from a venv this script creates once and reuses: airbyte-cdk at the pin of
tests/python/requirements.txt (that file constrains its dependencies too), in
$SOURCE_LOOP_CACHE/bench-venv-<hash> (default ~/.cache/source-loop). Its manifest is
bench/declarative/manifest.yaml, run with airbyte-cdk's `source-declarative-manifest`
entry point (`read --manifest-path`), as a user of the low-code CDK runs a manifest.

Every count comes from the fake's own bookkeeping (`/_control/stats`, `/_control/records`),
never from a connector's logs:

- requests: all requests the fake received per endpoint during one sync, 429s included;
- minimum pages: per stream ceil(records / 50), at least 1 (an empty stream still costs the
  request that says so), summed over the streams of the sync;
- 429s: the fake's `rate_limited` counter (per endpoint when its stats carry a per-path map);
- wall: from starting the connector to its exit (for the declarative source this includes
  Python's start-up, 1-2 s); "active" is first to last request as seen by polling the fake's
  stats every 50 ms, start-up excluded;
- theoretical minimum (rate-limited scenarios): streams run in parallel, each endpoint at its
  own limit, so max over streams of (pages - 1) x interval(endpoint) x scale, where
  interval = period / requests (subscription, order, activityLog 1.5 s, customer 1 s,
  product 1/6 s).

Scenarios:

1. first sync without rate limits, per data distribution (default, uniform, recent, bursts)
   at 20 000 subscriptions with the other streams in proportion; the declarative source on
   the uniform one (without its api_budget: with no limits to meet, the budget would only
   pace the same requests at Loop's rate, two minutes more for the same count). Then subscriptions alone at 1 000 000 (skipped by --quick; served in
   updatedAt order, which the fake indexes, so the fake is not the bottleneck).
2. first sync at Loop's limits x --scale, all five streams, ~2 000 subscriptions' worth of data,
   under each limiter kind (gcra, sliding-window, fixed-window) with Retry-After rounded up
   to whole seconds: source-loop, the declarative source without its api_budget, and with it.
3. incremental: a first sync, then the fake touches some records (`/_control/mutate`), then a
   second sync from the first one's final state; the second sync's ratio.
4. jitter series (only with `--only jitter`): scenario 2's store and limits with the fake's
   server-side jitter (`--jitter`: each request counted 0-10 ms late, 2 % of them 50 ms more),
   under each limiter kind, --runs syncs in a row on one fake; reports the distribution of
   wall / theoretical minimum and of 429s per endpoint per run (not the best run), with the
   load average around each run, because a shared machine's load moves the numbers.

Targets (printed next to the numbers): requests / minimum pages <= 1.05 on a first sync, and
wall / theoretical minimum <= 1.05 with at most one 429 per endpoint when rate-limited.
"""
from __future__ import annotations

import argparse
import atexit
import collections
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "bench" / "declarative" / "manifest.yaml"
REQUIREMENTS = ROOT / "tests" / "python" / "requirements.txt"
TOKEN = "bench-token-efficiency"  # long enough that airbyte-cdk's secret masking stays readable
PAGE_SIZE = 50
TARGET = 1.05

# Loop's documented per-endpoint limits: (requests, per seconds). Orders and activity logs are
# undocumented; clients pace them like subscriptions, and so does the fake.
LIMITS = {"subscription": (2, 3.0), "order": (2, 3.0), "activityLog": (2, 3.0),
          "customer": (1, 1.0), "product": (6, 1.0)}


@dataclass(frozen=True)
class Stream:
    name: str
    endpoint: str          # rate-limit key of source-loop's config, and the fake's path
    cursor: str | None     # incremental cursor field; None = full refresh
    key: str               # primary key


STREAMS = [
    Stream("subscriptions", "subscription", "updatedAt", "id"),
    Stream("orders", "order", "updatedAt", "id"),
    Stream("activity_logs", "activityLog", "createdAt", "id"),
    Stream("customers", "customer", None, "id"),
    Stream("products", "product", None, "shopifyId"),
]
BY_NAME = {s.name: s for s in STREAMS}
LIMITER_KINDS = ["gcra", "sliding-window", "fixed-window"]
DISTRIBUTIONS = ["default", "uniform", "recent", "bursts"]
# Above this many records a stream is counted from the fake's --<stream> flag instead of
# fetching every record from /_control/records (a 1 000 000-record answer is ~2 GB).
FETCH_RECORDS_UP_TO = 100_000
SETTLE_S = 2.5  # Loop filters on whole seconds: changes of the last second belong to the next sync


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def die(msg: str) -> None:
    log(f"\nefficiency.py: {msg}")
    sys.exit(2)


# ---------------------------------------------------------------------------------------------
# Child processes: every one is recorded and ended on exit, by its own pid.

CHILDREN: list[subprocess.Popen] = []


def _end_children() -> None:
    for p in CHILDREN:
        if p.poll() is None:
            try:
                if p.stdin:
                    p.stdin.close()
            except OSError:
                pass
            p.terminate()
    for p in CHILDREN:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()


atexit.register(_end_children)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


# ---------------------------------------------------------------------------------------------
# The venv with airbyte-cdk

def cdk_pin() -> str:
    m = re.search(r"^airbyte-cdk==(\S+)", REQUIREMENTS.read_text(), re.M)
    if not m:
        die(f"no 'airbyte-cdk==' pin in {REQUIREMENTS}")
    return m.group(1)


def ensure_venv() -> Path:
    """Creates (once) the venv with airbyte-cdk, keyed by the requirements and the Python."""
    pin = cdk_pin()
    py_version = sys.version
    digest = hashlib.sha256((REQUIREMENTS.read_text() + pin + py_version).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("SOURCE_LOOP_CACHE") or Path.home() / ".cache" / "source-loop")
    venv = cache / f"bench-venv-{digest}"
    if (venv / ".complete").exists() and (venv / "bin" / "source-declarative-manifest").exists():
        log(f"using {venv} (airbyte-cdk {pin})")
        return venv
    log(f"creating {venv}: airbyte-cdk=={pin} constrained by {REQUIREMENTS.relative_to(ROOT)} (about a minute, once)")
    shutil.rmtree(venv, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run(pip + [f"airbyte-cdk=={pin}", "-c", str(REQUIREMENTS)], check=True)
    except subprocess.CalledProcessError as e:
        die(f"could not create the venv ({e}); on Debian: apt-get install python3-venv; "
            f"or run with --no-declarative")
    (venv / ".complete").touch()
    return venv


def load_manifest(venv: Path) -> dict:
    """The checked-in YAML manifest as a dict (PyYAML comes with airbyte-cdk, not with us)."""
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
                          str(MANIFEST)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def iso_seconds(seconds: float) -> str:
    return "PT" + (f"{seconds:.6f}".rstrip("0").rstrip(".")) + "S"


def parse_iso_seconds(d: str) -> float:
    m = re.fullmatch(r"PT(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?", d)
    if not m or not any(m.groups()):
        die(f"manifest: cannot scale the interval {d!r} (write it as PT<n>S or PT<n>M)")
    return float(m.group(1) or 0) * 60 + float(m.group(2) or 0)


def manifest_variant(manifest: dict, budget: bool, scale: float, where: Path) -> Path:
    """The manifest without its api_budget, or with every budget interval times `scale`.

    Written as JSON, which is YAML too."""
    m = json.loads(json.dumps(manifest))
    if not budget:
        m.pop("api_budget", None)
    else:
        for policy in m["api_budget"]["policies"]:
            for rate in policy.get("rates", []):
                rate["interval"] = iso_seconds(parse_iso_seconds(rate["interval"]) * scale)
            if "period" in policy:
                policy["period"] = iso_seconds(parse_iso_seconds(policy["period"]) * scale)
    path = where / ("manifest-budget.json" if budget else "manifest-nobudget.json")
    path.write_text(json.dumps(m, indent=1))
    return path


# ---------------------------------------------------------------------------------------------
# The fake Loop API

@dataclass
class FakeFlags:
    """What this fake-loop binary supports (read from its --help)."""
    limiter: bool
    distribution: bool
    retry_after_rounded_up: bool

    @staticmethod
    def probe(binary: Path) -> "FakeFlags":
        try:
            text = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            die(f"cannot run {binary} --help: {e}")
        return FakeFlags(limiter="--limiter" in text, distribution="--distribution" in text,
                         retry_after_rounded_up="rounded-up" in text)

    def missing(self) -> list[str]:
        return ([] if self.limiter else ["--limiter gcra|sliding-window|fixed-window"]) + \
               ([] if self.distribution else ["--distribution default|uniform|recent|bursts"]) + \
               ([] if self.retry_after_rounded_up else ["--retry-after rounded-up"])


class Fake:
    def __init__(self, binary: Path, args: list[str], startup_timeout: float = 300):
        self.args = [str(binary), "--port", "0", "--token", TOKEN, "--exit-on-stdin-eof", *args]
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        CHILDREN.append(self.proc)
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        threading.Thread(target=lambda: [self.stderr_tail.append(l) for l in self.proc.stderr],
                         daemon=True).start()
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(startup_timeout)
        if not first or not first[0].strip():
            self.stop()
            die(f"fake-loop did not start: {' '.join(self.args[1:])}\n" + "".join(self.stderr_tail))
        info = json.loads(first[0])
        self.base_url: str = info["base_url"]
        self.root_url: str = info["root_url"].rstrip("/")
        threading.Thread(target=lambda: self.proc.stdout.read(), daemon=True).start()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.root_url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            die(f"fake-loop {method} {path}: HTTP {e.code} {e.read()[:300]!r}")

    def stats(self) -> dict:
        return self._call("GET", "/_control/stats")

    def records(self, stream: str) -> list[dict]:
        return self._call("GET", f"/_control/records/{stream}")

    def mutate(self, mutation: dict) -> list[dict]:
        return self._call("POST", "/_control/mutate", mutation)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)


def fake_args(counts: dict[str, int], extra: list[str]) -> list[str]:
    args = []
    for s in STREAMS:
        args += [f"--{s.name.replace('_', '-')}", str(counts.get(s.name, 0))]
    return args + extra


def stats_delta(before: dict, after: dict) -> dict:
    """Requests per endpoint and 429s (total, and per endpoint when the fake counts them)."""
    req = {k: after["requests"].get(k, 0) - before["requests"].get(k, 0) for k in after["requests"]}
    req = {k: v for k, v in req.items() if v}
    by_path = None
    for key, val in after.items():
        if isinstance(val, dict) and key != "requests" and ("rate_limited" in key or "429" in key):
            prev = before.get(key) or {}
            by_path = {k: v - prev.get(k, 0) for k, v in val.items() if v - prev.get(k, 0)}
            break
    return {"requests": req, "http_429": after["rate_limited"] - before["rate_limited"],
            "http_429_by_endpoint": by_path}


def parse_ts_ms(s: str) -> int:
    return int(datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass
class Truth:
    """What the fake holds for the streams of a sync: record counts and (when fetched) keys."""
    counts: dict[str, int]
    keys: dict[str, set] | None   # None when a stream was too big to fetch

    @staticmethod
    def of(fake: Fake, streams: list[str], flag_counts: dict[str, int]) -> "Truth":
        counts, keys, fetched_all = {}, {}, True
        for name in streams:
            if flag_counts.get(name, 0) > FETCH_RECORDS_UP_TO:
                counts[name] = flag_counts[name]
                fetched_all = False
                continue
            recs = fake.records(name)
            counts[name] = len(recs)
            keys[name] = {r[BY_NAME[name].key] for r in recs}
        return Truth(counts, keys if fetched_all else None)

    def min_pages(self) -> dict[str, int]:
        return {n: max(1, math.ceil(c / PAGE_SIZE)) for n, c in self.counts.items()}


# ---------------------------------------------------------------------------------------------
# Connectors

@dataclass
class Run:
    connector: str
    wall_s: float
    active_s: float | None        # first request to last request, seen by polling the fake
    exit: int | str
    records: dict[str, int]
    distinct: dict[str, set] | None
    states: list[dict]            # last AirbyteStateMessage per stream
    errors: list[str]


def catalog(streams: list[str]) -> dict:
    out = []
    for name in streams:
        s = BY_NAME[name]
        stream = {"name": name, "json_schema": {"type": "object"}, "source_defined_primary_key": [[s.key]],
                  "supported_sync_modes": ["full_refresh", "incremental"] if s.cursor else ["full_refresh"]}
        c = {"stream": stream, "sync_mode": "incremental" if s.cursor else "full_refresh",
             "destination_sync_mode": "append", "primary_key": [[s.key]]}
        if s.cursor:
            stream.update(source_defined_cursor=True, default_cursor_field=[s.cursor])
            c["cursor_field"] = [s.cursor]
        out.append(c)
    return {"streams": out}


_STREAM_RE = re.compile(rb'"stream":\s*"([^"]+)"')


POLL_S = 0.05


def request_span(fake: Fake, done: threading.Event, t0: float, spans: list[float]) -> None:
    """Polls the fake's request total until `done`: appends the times (since t0) of the first
    and of the last request, to POLL_S. The control endpoints do not count as requests."""
    base = last = sum(fake.stats()["requests"].values())
    first_at = last_at = None
    while not done.wait(POLL_S):
        total = sum(fake.stats()["requests"].values())
        if total != last:
            now = time.monotonic() - t0
            first_at = now if first_at is None else first_at
            last_at, last = now, total
    total = sum(fake.stats()["requests"].values())
    if total != last:  # requests after the last poll: the exit is close enough
        last_at = time.monotonic() - t0
        first_at = last_at if first_at is None else first_at
    if first_at is not None and total != base:
        spans += [first_at, last_at]


def run_connector(label: str, tag: str, argv: list[str], env: dict | None, timeout: float,
                  streams: list[str], keys: bool, workdir: Path, fake: Fake) -> Run:
    """Runs one sync; stdout goes to a file (never back-pressured by us) and is read afterwards."""
    out_path, err_path = workdir / f"{tag}.out", workdir / f"{tag}.err"
    done, spans = threading.Event(), []
    t0 = time.monotonic()
    poller = threading.Thread(target=request_span, args=(fake, done, t0, spans), daemon=True)
    poller.start()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        CHILDREN.append(p)
        try:
            code: int | str = p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            code = f"killed after {timeout:.0f}s"
    wall = time.monotonic() - t0
    done.set()
    poller.join(30)
    active = min(wall, spans[1] - spans[0] + POLL_S) if len(spans) == 2 else None
    records: collections.Counter[str] = collections.Counter()
    distinct: dict[str, set] | None = {s: set() for s in streams} if keys else None
    states: dict[str, dict] = {}
    errors: list[str] = []
    with open(out_path, "rb") as f:
        for line in f:
            head = line[:40]
            if b'"RECORD"' in head:
                if distinct is not None:
                    rec = json.loads(line)["record"]
                    records[rec["stream"]] += 1
                    distinct.setdefault(rec["stream"], set()).add(rec["data"].get(BY_NAME[rec["stream"]].key))
                else:
                    m = _STREAM_RE.search(line, 0, 200)
                    records[m.group(1).decode() if m else "?"] += 1
            elif b'"STATE"' in head:
                msg = json.loads(line)
                desc = msg["state"].get("stream", {}).get("stream_descriptor", {}).get("name", "")
                states[desc] = msg["state"]  # AirbyteStateMessage: what --state takes back
            elif b'"TRACE"' in head:
                msg = json.loads(line)
                if msg["trace"].get("type") == "ERROR":
                    errors.append(msg["trace"]["error"].get("message", "")[:300])
    if code != 0 and not errors:
        errors.append(err_path.read_text(errors="replace")[-500:])
    return Run(label, wall, active, code, dict(records), distinct, list(states.values()), errors)


class SourceLoop:
    label = "source-loop"

    def __init__(self, binary: Path):
        self.binary = binary

    def read(self, fake: Fake, streams: list[str], rate_limits: dict, state: list[dict] | None,
             timeout: float, keys: bool, workdir: Path) -> Run:
        cfg = {"api_token": TOKEN, "base_url": fake.base_url, "start_date": "2015-01-01T00:00:00Z",
               "page_size": PAGE_SIZE, "rate_limits": rate_limits}
        (workdir / "sl-config.json").write_text(json.dumps(cfg))
        (workdir / "sl-catalog.json").write_text(json.dumps(catalog(streams)))
        argv = [str(self.binary), "read", "--config", str(workdir / "sl-config.json"),
                "--catalog", str(workdir / "sl-catalog.json")]
        if state is not None:
            (workdir / "sl-state.json").write_text(json.dumps(state))
            argv += ["--state", str(workdir / "sl-state.json")]
        return run_connector(self.label, "source-loop", argv, None, timeout, streams, keys, workdir, fake)


class Declarative:
    def __init__(self, venv: Path, manifest: Path, label: str):
        self.entry = venv / "bin" / "source-declarative-manifest"
        self.manifest = manifest
        self.label = label
        self.env = dict(os.environ, AIRBYTE_OFFLINE_MODE="1", DO_NOT_TRACK="1",
                        PYTHONWARNINGS="ignore")

    def read(self, fake: Fake, streams: list[str], rate_limits: dict, state: list[dict] | None,
             timeout: float, keys: bool, workdir: Path) -> Run:
        cfg = {"api_token": TOKEN, "base_url": fake.base_url, "start_date": "2015-01-01T00:00:00Z"}
        tag = self.label.replace(" ", "-").replace("+", "")
        (workdir / f"{tag}-config.json").write_text(json.dumps(cfg))
        (workdir / f"{tag}-catalog.json").write_text(json.dumps(catalog(streams)))
        argv = [str(self.entry), "read", "--config", str(workdir / f"{tag}-config.json"),
                "--catalog", str(workdir / f"{tag}-catalog.json"), "--manifest-path", str(self.manifest)]
        if state is not None:
            (workdir / f"{tag}-state.json").write_text(json.dumps(state))
            argv += ["--state", str(workdir / f"{tag}-state.json")]
        return run_connector(self.label, tag, argv, self.env, timeout, streams, keys, workdir, fake)


# ---------------------------------------------------------------------------------------------
# Measuring

def theoretical_min_s(min_pages: dict[str, int], scale: float) -> tuple[float, str]:
    """Streams in parallel, each at its endpoint's limit: the slowest stream's paced pages."""
    best, slowest = 0.0, ""
    for name, pages in min_pages.items():
        n, per = LIMITS[BY_NAME[name].endpoint]
        t = (pages - 1) * per / n * scale
        if t >= best:
            best, slowest = t, name
    return best, slowest


def measure(run: Run, delta: dict, truth: Truth, min_pages: dict[str, int],
            min_s: float | None, must_see: dict[str, set] | None = None) -> dict:
    per_stream = {}
    for name, pages in min_pages.items():
        req = delta["requests"].get("/" + BY_NAME[name].endpoint, 0)
        per_stream[name] = {"records_fake": truth.counts[name], "records_read": run.records.get(name, 0),
                            "min_pages": pages, "requests": req, "ratio": round(req / pages, 4)}
    requests = sum(delta["requests"].values())
    total_min = sum(min_pages.values())
    # every record read: a first sync reads each exactly once; an incremental at least the changed ones
    if must_see is None:
        if run.distinct is not None and truth.keys is not None:
            complete = all(run.distinct.get(n, set()) >= truth.keys[n] for n in min_pages)
        else:
            complete = all(run.records.get(n, 0) >= truth.counts[n] for n in min_pages)
    else:
        complete = run.distinct is not None and all(run.distinct.get(n, set()) >= ks for n, ks in must_see.items())
    out = {"connector": run.connector, "exit": run.exit, "complete": complete,
           "records_read": sum(run.records.values()), "requests": requests, "min_pages": total_min,
           "ratio": round(requests / total_min, 4),
           "worst_stream_ratio": max(v["ratio"] for v in per_stream.values()),
           "http_429": delta["http_429"], "http_429_by_endpoint": delta["http_429_by_endpoint"],
           "wall_s": round(run.wall_s, 3),
           "active_s": None if run.active_s is None else round(run.active_s, 3), "per_stream": per_stream,
           "requests_by_endpoint": delta["requests"], "errors": run.errors[:3]}
    if min_s:
        out["theoretical_min_s"] = round(min_s, 3)
        out["wall_ratio"] = round(run.wall_s / min_s, 4)
        if run.active_s is not None:
            out["active_ratio"] = round(run.active_s / min_s, 4)
    return out


def proportional(subscriptions: int) -> dict[str, int]:
    """The fake's default mix (500 subscriptions : 800 orders : 200 customers : 30 products :
    1000 activity logs) at this many subscriptions, each count nudged off a multiple of 50: a
    stream whose last page is exactly full costs a page-number paginator that stops on a short
    page (the declarative source's) one empty request, which a round benchmark number would
    otherwise charge on every stream."""
    counts = {"subscriptions": subscriptions, "orders": subscriptions * 8 // 5,
              "customers": subscriptions * 2 // 5, "products": max(30, subscriptions * 3 // 50),
              "activity_logs": subscriptions * 2}
    return {k: v + 17 if v % PAGE_SIZE == 0 else v for k, v in counts.items()}


def fast_limits() -> dict:
    return {ep: {"requests": 10000, "per_seconds": 1} for ep in LIMITS}


def scaled_limits(scale: float) -> dict:
    return {ep: {"requests": n, "per_seconds": per * scale} for ep, (n, per) in LIMITS.items()}


@dataclass
class Scenario:
    name: str
    kind: str                     # first-sync | rate-limited | incremental
    counts: dict[str, int]
    extra: list[str]              # fake-loop flags beyond the counts
    connectors: list[Any]
    rate_limited: bool = False
    notes: list[str] = field(default_factory=list)


def run_first_sync(sc: Scenario, bin_dir: Path, scale: float, timeout: float) -> dict:
    streams = [s.name for s in STREAMS if sc.counts.get(s.name, 0) > 0]
    log(f"\n== {sc.name}: fake-loop {' '.join(fake_args(sc.counts, sc.extra))}")
    t_start = time.monotonic()
    fake = Fake(bin_dir / "fake-loop", fake_args(sc.counts, sc.extra))
    log(f"   fake ready in {time.monotonic() - t_start:.1f}s")
    try:
        truth = Truth.of(fake, streams, sc.counts)
        pages = truth.min_pages()
        min_s = theoretical_min_s(pages, scale)[0] if sc.rate_limited else None
        limits = scaled_limits(scale) if sc.rate_limited else fast_limits()
        keys = truth.keys is not None
        runs = []
        for c in sc.connectors:
            if sc.rate_limited:
                time.sleep(max(1.0, 3.0 * scale * 2))  # let the fake's limiters refill between syncs
            with tempfile.TemporaryDirectory(prefix="efficiency-") as d:
                before = fake.stats()
                run = c.read(fake, streams, limits, None, timeout, keys, Path(d))
                delta = stats_delta(before, fake.stats())
            m = measure(run, delta, truth, pages, min_s)
            runs.append(m)
            log(f"   {m['connector']:<22} {short(m)}")
    finally:
        fake.stop()
    out = {"scenario": sc.name, "kind": sc.kind, "fake_flags": fake_args(sc.counts, sc.extra),
           "records": truth.counts, "min_pages": pages, "runs": runs, "notes": sc.notes}
    if min_s is not None:
        out["theoretical_min_s"] = round(min_s, 3)
        out["slowest_stream"] = theoretical_min_s(pages, scale)[1]
    return out


MUTATIONS = [  # the change between the first and the incremental sync (about a tenth of each stream)
    {"touch": {"stream": "subscriptions", "count": 230}},
    {"touch": {"stream": "orders", "count": 310}},
    {"create": {"stream": "activity_logs", "count": 140}},
    {"touch": {"stream": "customers", "count": 40}},
]


def run_incremental(sc: Scenario, bin_dir: Path, scale: float, timeout: float) -> dict:
    """Per connector, on a fake of its own (so one connector's changes are not the other's
    first-sync data): first sync, mutate, settle, incremental sync from the first one's state."""
    streams = [s.name for s in STREAMS]
    log(f"\n== {sc.name}: fake-loop {' '.join(fake_args(sc.counts, sc.extra))}")
    runs = []
    for c in sc.connectors:
        fake = Fake(bin_dir / "fake-loop", fake_args(sc.counts, sc.extra))
        try:
            with tempfile.TemporaryDirectory(prefix="efficiency-") as d:
                first = c.read(fake, streams, fast_limits(), None, timeout, False, Path(d))
            if first.exit != 0:
                runs.append({"connector": c.label, "exit": first.exit, "errors": first.errors,
                             "complete": False, "note": "first sync failed"})
                log(f"   {c.label:<22} first sync failed, exit {first.exit}: {'; '.join(first.errors)[:300]}")
                continue
            changed_from = int(time.time() * 1000) - 1  # the fake stamps changes with its (our) clock
            for m in MUTATIONS:
                fake.mutate(m)
            time.sleep(SETTLE_S)
            # what changed, per the fake: what a perfect incremental sync must read, and no more
            must_see, counts = {}, {}
            for name in streams:
                s = BY_NAME[name]
                recs = fake.records(name)
                if s.cursor:
                    changed = [r for r in recs if parse_ts_ms(r[s.cursor]) >= changed_from]
                else:
                    changed = recs  # full refresh: everything, every time
                must_see[name] = {r[s.key] for r in changed}
                counts[name] = len(changed)
            truth = Truth(counts, must_see)
            pages = truth.min_pages()
            with tempfile.TemporaryDirectory(prefix="efficiency-") as d:
                before = fake.stats()
                run = c.read(fake, streams, fast_limits(), first.states, timeout, True, Path(d))
                delta = stats_delta(before, fake.stats())
        finally:
            fake.stop()
        m = measure(run, delta, truth, pages, None, must_see=must_see)
        m["changed_records"] = counts
        runs.append(m)
        log(f"   {m['connector']:<22} {short(m)}")
    return {"scenario": sc.name, "kind": sc.kind, "fake_flags": fake_args(sc.counts, sc.extra),
            "mutations": MUTATIONS, "runs": runs, "notes": sc.notes}


def run_series(sc: Scenario, bin_dir: Path, scale: float, timeout: float, runs: int) -> dict:
    """`runs` rate-limited first syncs in a row per connector on one fake (each a fresh
    first sync: no state), with the load average before each."""
    streams = [s.name for s in STREAMS if sc.counts.get(s.name, 0) > 0]
    log(f"\n== {sc.name}: {runs} runs, fake-loop {' '.join(fake_args(sc.counts, sc.extra))}")
    fake = Fake(bin_dir / "fake-loop", fake_args(sc.counts, sc.extra))
    try:
        truth = Truth.of(fake, streams, sc.counts)
        pages = truth.min_pages()
        min_s = theoretical_min_s(pages, scale)[0]
        out_runs = []
        for i in range(runs):
            for c in sc.connectors:
                time.sleep(max(1.0, 3.0 * scale * 2))  # let the fake's limiters refill between syncs
                load = os.getloadavg()[0]
                with tempfile.TemporaryDirectory(prefix="efficiency-") as d:
                    before = fake.stats()
                    run = c.read(fake, streams, scaled_limits(scale), None, timeout, True, Path(d))
                    delta = stats_delta(before, fake.stats())
                m = measure(run, delta, truth, pages, min_s)
                m["run"] = i + 1
                m["load_1min"] = round(load, 2)
                out_runs.append(m)
                log(f"   {i + 1:>2} {m['connector']:<20} load {load:5.2f}  {short(m)}"
                    f"  429s/ep {m.get('http_429_by_endpoint') or {}}")
    finally:
        fake.stop()
    return {"scenario": sc.name, "kind": sc.kind, "fake_flags": fake_args(sc.counts, sc.extra),
            "records": truth.counts, "min_pages": pages, "runs": out_runs, "notes": sc.notes,
            "theoretical_min_s": round(min_s, 3), "slowest_stream": theoretical_min_s(pages, scale)[1]}


def series_summary(results: list[dict]) -> list[dict]:
    """Per series scenario and connector: the distribution over its runs."""
    rows = []
    for r in results:
        if r["kind"] != "series":
            continue
        for label in dict.fromkeys(m["connector"] for m in r["runs"]):
            ms = [m for m in r["runs"] if m["connector"] == label]
            walls = sorted(m["wall_ratio"] for m in ms)
            per_ep = [max((m.get("http_429_by_endpoint") or {}).values(), default=0) for m in ms]
            totals = [m["http_429"] for m in ms]
            loads = [m["load_1min"] for m in ms]
            rows.append({
                "scenario": r["scenario"], "connector": label, "runs": len(ms),
                "theoretical_min_s": r["theoretical_min_s"],
                "wall_ratio_min": walls[0], "wall_ratio_median": walls[len(walls) // 2],
                "wall_ratio_max": walls[-1], "wall_ratios": [m["wall_ratio"] for m in ms],
                "runs_within_1_08": sum(w <= 1.08 for w in walls),
                "http_429_per_run": totals, "max_429_per_endpoint_per_run": per_ep,
                "runs_with_at_most_one_429_per_endpoint": sum(n <= 1 for n in per_ep),
                "complete": all(m["complete"] for m in ms),
                "load_1min_min": min(loads), "load_1min_max": max(loads),
            })
    return rows


def series_markdown(rows: list[dict]) -> str:
    lines = ["| series | runs | wall ÷ min: min / median / max (runs ≤ 1.08) | 429s per run | max 429s on one endpoint per run | load average (1 min) |",
             "|---|---|---|---|---|---|"]
    for s in rows:
        lines.append(
            f"| {s['scenario']}, {SHORT.get(s['connector'], s['connector'])}, min {s['theoretical_min_s']:.1f} s | {s['runs']} | "
            f"{s['wall_ratio_min']:.3f} / {s['wall_ratio_median']:.3f} / {s['wall_ratio_max']:.3f} ({s['runs_within_1_08']}/{s['runs']}) | "
            f"{' '.join(map(str, s['http_429_per_run']))} | {' '.join(map(str, s['max_429_per_endpoint_per_run']))} | "
            f"{s['load_1min_min']:.1f}–{s['load_1min_max']:.1f} |" + ("" if s["complete"] else " INCOMPLETE"))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Output

def fmt(x: Any, spec: str = "") -> str:
    if x is None:
        return "-"
    return format(x, spec) if spec else str(x)


def short(m: dict) -> str:
    s = f"req {m.get('requests', '-')}/{m.get('min_pages', '-')} = {fmt(m.get('ratio'), '.3f')}"
    s += f"  429s {fmt(m.get('http_429'))}  wall {fmt(m.get('wall_s'), '.2f')}s"
    if "wall_ratio" in m:
        s += f" / {m['theoretical_min_s']:.2f}s = {m['wall_ratio']:.3f}"
    if not m.get("complete"):
        s += "  INCOMPLETE"
    if m.get("exit") not in (0, None):
        s += f"  exit {m['exit']}: {'; '.join(m.get('errors') or [])[:200]}"
    return s


def mark(ok: bool | None) -> str:
    return "" if ok is None else (" ok" if ok else " !!")


SHORT = {"source-loop": "loop", "declarative": "decl", "declarative+budget": "decl+budget"}


def table(results: list[dict]) -> str:
    head = ["scenario", "connector", "records", "all read", "requests", "min pages", "req/min",
            "429s", "max 429/ep", "wall s", "active s", "min s", "wall/min", "active/min"]
    rows = []
    for r in results:
        for m in r["runs"]:
            by_ep = m.get("http_429_by_endpoint")
            first = r["kind"] != "incremental" and "ratio" in m
            rows.append([
                r["scenario"], m["connector"], fmt(m.get("records_read")),
                "yes" if m.get("complete") else "NO", fmt(m.get("requests")), fmt(m.get("min_pages")),
                fmt(m.get("ratio"), ".3f") + (mark(m["ratio"] <= TARGET) if first else ""),
                fmt(m.get("http_429")), fmt(max(by_ep.values(), default=0) if by_ep is not None else None),
                fmt(m.get("wall_s"), ".2f"), fmt(m.get("active_s"), ".2f"), fmt(m.get("theoretical_min_s"), ".2f"),
                fmt(m.get("wall_ratio"), ".3f") + (mark(m["wall_ratio"] <= TARGET) if "wall_ratio" in m else ""),
                fmt(m.get("active_ratio"), ".3f"),
            ])
    return render(head, rows)


def side_by_side(results: list[dict], labels: list[str]) -> str:
    head = ["scenario"] + [f"req/min {SHORT[l]}" for l in labels] + [f"wall/min {SHORT[l]}" for l in labels] + \
           [f"429s (max/ep) {SHORT[l]}" for l in labels]
    rows = []
    for r in results:
        by = {m["connector"]: m for m in r["runs"]}
        row = [r["scenario"]]
        for key, spec in (("ratio", ".3f"), ("wall_ratio", ".3f")):
            for l in labels:
                row.append(fmt(by.get(l, {}).get(key), spec))
        for l in labels:
            m = by.get(l, {})
            ep = m.get("http_429_by_endpoint")
            row.append(fmt(m.get("http_429")) + (f" ({max(ep.values(), default=0)})" if ep is not None else ""))
        rows.append(row)
    return render(head, rows)


def markdown(doc: dict, labels: list[str]) -> str:
    """The side-by-side numbers as a README table, with date, machine and command."""
    mach = doc["machine"]
    lines = [f"Measured {doc['date'][:10]} on {mach['cpus']} cores ({mach['cpu_model']}, {mach['memory']}), "
             f"`{doc['command']}`" + (f", airbyte-cdk {doc['airbyte_cdk']}" if doc.get("airbyte_cdk") else "")
             + f", {doc['total_s']:.0f} s in all." + (" " + "; ".join(doc["notes"]) + "." if doc["notes"] else ""),
             ""]
    who = " / ".join(SHORT[l] for l in labels)
    lines.append(f"| scenario | requests ÷ min pages ({who}) | 429s ({who}) | wall ÷ theoretical min ({who}) |")
    lines.append("|---|---|---|---|")
    for r in doc["scenarios"]:
        by = {m["connector"]: m for m in r["runs"]}
        ratio, http_429, wall = [], [], []
        for l in labels:
            m = by.get(l) or {}
            ratio.append("–" if "ratio" not in m else f"{m['ratio']:.2f}" + ("" if m.get("complete") else " (incomplete)"))
            ep = m.get("http_429_by_endpoint")
            http_429.append("–" if "http_429" not in m else
                            f"{m['http_429']}" + (f" (max {max(ep.values())}/endpoint)" if ep else ""))
            wall.append("–" if "wall_ratio" not in m else f"{m['wall_ratio']:.2f}")
        name = r["scenario"] + (f", min {r['theoretical_min_s']:.1f} s" if "theoretical_min_s" in r else "")
        lines.append(f"| {name} | {' / '.join(ratio)} | {' / '.join(http_429)} | {' / '.join(wall)} |")
    return "\n".join(lines) + "\n"


def render(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    left = 2 if len(head) > 1 and head[1] == "connector" else 1
    line = lambda cells: "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def machine() -> dict:
    model = ""
    try:
        for l in open("/proc/cpuinfo"):
            if l.startswith("model name"):
                model = l.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for l in open("/proc/meminfo"):
            if l.startswith("MemTotal"):
                mem = f"{int(l.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory": mem, "os": platform.platform()}


# ---------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    default_bins = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "release"
    ap.add_argument("--bin-dir", type=Path, default=default_bins, help="fake-loop and source-loop (default %(default)s)")
    ap.add_argument("--scale", type=float, default=0.1, help="time scale of Loop's rate limits (default %(default)s)")
    ap.add_argument("--quick", action="store_true", help="smaller data, no 1 000 000-subscription store (~2 min)")
    ap.add_argument("--json", type=Path, help="also write every number here")
    ap.add_argument("--markdown", type=Path, help="also write the side-by-side table here, for the README")
    ap.add_argument("--no-declarative", action="store_true", help="source-loop only (no venv)")
    ap.add_argument("--no-new-flags", action="store_true",
                    help="fake-loop without --limiter/--distribution/--retry-after rounded-up: run what it has")
    ap.add_argument("--timeout", type=float, default=900, help="per sync, seconds (default %(default)s)")
    ap.add_argument("--only", choices=["first-sync", "rate-limited", "incremental", "jitter"], action="append",
                    help="run only these scenario kinds (repeatable; the jitter series only when named)")
    ap.add_argument("--runs", type=int, default=10, help="syncs in a row per limiter kind in the jitter series (default %(default)s)")
    ap.add_argument("--series-jitter", choices=["on", "off"], action="append",
                    help="the series with the fake's --jitter, without, or both (repeatable; default on)")
    a = ap.parse_args()

    bin_dir = a.bin_dir if a.bin_dir.is_absolute() else (Path.cwd() / a.bin_dir)
    for b in ("fake-loop", "source-loop"):
        if not os.access(bin_dir / b, os.X_OK):
            die(f"no {bin_dir / b}: run `cargo build --release --workspace --bins` (or pass --bin-dir)")
    flags = FakeFlags.probe(bin_dir / "fake-loop")
    notes: list[str] = []
    if flags.missing():
        if not a.no_new_flags:
            die(f"{bin_dir / 'fake-loop'} lacks {', '.join(flags.missing())}.\n"
                "Build a fake-loop that has them, or pass --no-new-flags to measure only what this one "
                "supports (default data shape, its built-in GCRA limiter, Retry-After always sent and "
                "rounded up to whole seconds).")
        notes.append("--no-new-flags: fake-loop lacks " + ", ".join(flags.missing()) + "; ran without them")
        log("note: " + notes[-1])

    venv = manifest = None
    labels = ["source-loop"]
    if not a.no_declarative:
        venv = ensure_venv()
        manifest = load_manifest(venv)
        labels += ["declarative", "declarative+budget"]
    work = Path(tempfile.mkdtemp(prefix="efficiency-manifests-"))
    atexit.register(shutil.rmtree, work, True)
    loop = SourceLoop(bin_dir / "source-loop")
    decl = decl_budget = None
    if venv is not None:
        decl = Declarative(venv, manifest_variant(manifest, False, a.scale, work), "declarative")
        decl_budget = Declarative(venv, manifest_variant(manifest, True, a.scale, work), "declarative+budget")

    quick = a.quick
    subs = 5_000 if quick else 20_000
    rl_counts = proportional(500 if quick else 2_000)
    distributions = DISTRIBUTIONS if flags.distribution else ["default"]
    decl_distribution = "uniform" if "uniform" in distributions else "default"
    limiters = LIMITER_KINDS if flags.limiter else [None]
    # today's fake always rounds Retry-After up to whole seconds (at least 1)
    retry_after = "rounded-up" if flags.retry_after_rounded_up else "always"
    kinds = set(a.only or ["first-sync", "rate-limited", "incremental"])

    scenarios: list[tuple[Callable, Scenario]] = []
    if "first-sync" in kinds:
        for d in distributions:
            extra = ["--distribution", d] if flags.distribution else []
            conns = [loop] + ([decl] if decl and d == decl_distribution else [])
            scenarios.append((run_first_sync, Scenario(
                f"first sync, {d}, {subs // 1000}k subs", "first-sync", proportional(subs), extra, conns)))
        if not quick:
            big = {"subscriptions": 1_000_000}
            scenarios.append((run_first_sync, Scenario(
                "first sync, 1M subscriptions only", "first-sync", big,
                ["--page-order", "updated-asc"], [loop],
                notes=["served in updatedAt order: the fake indexes it; id order rescans 1M records per filtered page"])))
    if "rate-limited" in kinds:
        for lim in limiters:
            extra = ["--rate-limits", "--rate-scale", str(a.scale), "--retry-after", retry_after]
            if lim:
                extra += ["--limiter", lim]
            conns = [loop] + ([decl, decl_budget] if decl else [])
            scenarios.append((run_first_sync, Scenario(
                f"limits x{a.scale:g}, {lim or 'gcra'}, Retry-After {retry_after}",
                "rate-limited", rl_counts, extra, conns, rate_limited=True)))
    if "jitter" in kinds:
        for jitter in dict.fromkeys(a.series_jitter or ["on"]):
            for lim in limiters:
                extra = ["--rate-limits", "--rate-scale", str(a.scale), "--retry-after", retry_after]
                extra += (["--limiter", lim] if lim else []) + (["--jitter"] if jitter == "on" else [])
                conns = [loop] + ([decl_budget] if decl_budget else [])
                scenarios.append((lambda sc, b, s, t: run_series(sc, b, s, t, a.runs), Scenario(
                    f"limits x{a.scale:g}, {lim or 'gcra'}, " + ("jitter 0-10 ms + 2 % x 50 ms" if jitter == "on" else "no jitter"),
                    "series", rl_counts, extra, conns, rate_limited=True)))
    if "incremental" in kinds:
        conns = [loop] + ([decl] if decl else [])
        scenarios.append((run_incremental, Scenario(
            f"incremental, {sum(next(iter(m.values()))['count'] for m in MUTATIONS)} changes",
            "incremental", rl_counts, [], conns)))

    started = time.monotonic()
    results = []
    for fn, sc in scenarios:
        results.append(fn(sc, bin_dir, a.scale, a.timeout))
    total = time.monotonic() - started
    series = series_summary(results)
    results = [r for r in results if r["kind"] != "series"] + [r for r in results if r["kind"] == "series"]
    single = [r for r in results if r["kind"] != "series"]

    print()
    print(table(results))
    if series:
        print()
        print("series (the distribution over runs, not the best run; targets: wall/min <= 1.08, "
              "at most one 429 per endpoint per run):")
        print(series_markdown(series))
    print()
    print("side by side (target <= %.2f; wall/min only where rate-limited; loop = source-loop, decl = "
          "the declarative source without its api_budget, decl+budget = with it):" % TARGET)
    print(side_by_side(single, labels))
    print(f"\ntotal {total:.0f}s; scale {a.scale:g}; load average now {os.getloadavg()[0]:.2f}"
          + "".join("; " + n for n in notes))
    cdk = None
    if venv is not None:
        cdk = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "from importlib.metadata import version; print(version('airbyte-cdk'))"],
                             capture_output=True, text=True).stdout.strip()
    doc = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "command": " ".join(["python3", "bench/efficiency.py", *sys.argv[1:]]),
           "machine": machine(), "airbyte_cdk": cdk, "scale": a.scale, "quick": quick,
           "fake_loop_flags": flags.__dict__, "notes": notes, "total_s": round(total, 1),
           "targets": {"requests_per_min_pages": TARGET, "wall_per_theoretical_min": TARGET,
                       "max_429_per_endpoint": 1},
           "scenarios": results, "series": series}
    if a.json:
        a.json.write_text(json.dumps(doc, indent=1))
        log(f"wrote {a.json}")
    if a.markdown:
        a.markdown.write_text((markdown(dict(doc, scenarios=single), labels) if single else "")
                              + ("\n" + series_markdown(series) if series else ""))
        log(f"wrote {a.markdown}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
