#!/usr/bin/env python3
"""The Singer writer's cost: the same sync (subscriptions and orders, no rate limits, records
validated) through `source-loop read` (Airbyte messages), `tap-loop` (Singer messages), and
`tap-loop` with fields deselected (each record's JSON cut on the way out). Best of N runs,
records/s and CPU seconds, from release binaries against the bundled fake Loop API.

Usage: bench/singer_bench.py [--bin-dir target/release] [--subscriptions 100000] [--runs 3]
Talks only to 127.0.0.1 servers it starts and stops.
"""
import argparse, json, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sync_bench import LIMITS, catalog, start_fake, stop  # noqa: E402

STREAMS = ["subscriptions", "orders"]
DESELECTED = ["lineItems", "shippingAddress", "billingPolicy", "deliveryPolicy", "discounts"]


def singer_catalog(deselect):
    streams = []
    for s in STREAMS:
        md = [{"breadcrumb": [], "metadata": {"selected": True, "replication-method": "INCREMENTAL"}}]
        md += [{"breadcrumb": ["properties", f], "metadata": {"selected": False}} for f in deselect]
        streams.append({"tap_stream_id": s, "stream": s, "schema": {}, "metadata": md})
    return {"streams": streams}


def run(cmd):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    records, out_bytes = 0, 0
    for line in p.stdout:
        out_bytes += len(line)
        if line.startswith(b'{"type":"RECORD"'):
            records += 1
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    return {"wall_s": round(wall, 3), "records": records, "exit": os.waitstatus_to_exitcode(status),
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 3), "records_per_s": round(records / wall),
            "out_mib": round(out_bytes / 2**20, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release"))
    ap.add_argument("--subscriptions", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    counts = {"subscriptions": a.subscriptions, "orders": a.subscriptions // 2, "customers": 1,
              "products": 1, "activity_logs": 1}
    fake, info = start_fake(a.bin_dir, counts)
    results = {}
    try:
        fast = {ep: {"requests": 10000, "per_seconds": 1} for ep in LIMITS}
        config = {"api_token": "bench-token", "base_url": info["base_url"], "rate_limits": fast}
        with tempfile.TemporaryDirectory() as d:
            cp = os.path.join(d, "config.json")
            json.dump(config, open(cp, "w"))
            paths = {}
            for name, doc in [("airbyte", catalog(STREAMS)), ("singer", singer_catalog([])),
                              ("singer_deselected", singer_catalog(DESELECTED))]:
                paths[name] = os.path.join(d, name + ".json")
                json.dump(doc, open(paths[name], "w"))
            cmds = {
                "airbyte (source-loop read)": [os.path.join(a.bin_dir, "source-loop"), "read", "--config", cp,
                                               "--catalog", paths["airbyte"]],
                "singer (tap-loop)": [os.path.join(a.bin_dir, "tap-loop"), "--config", cp, "--catalog",
                                      paths["singer"]],
                f"singer, {len(DESELECTED)} fields deselected": [os.path.join(a.bin_dir, "tap-loop"), "--config",
                                                                 cp, "--catalog", paths["singer_deselected"]],
            }
            for _ in range(a.runs):
                for name, cmd in cmds.items():
                    r = run(cmd)
                    if name not in results or r["wall_s"] < results[name]["wall_s"]:
                        results[name] = r
    finally:
        stop(fake)
    print(json.dumps({"counts": counts, "best_of": a.runs, "results": results}, indent=2))


if __name__ == "__main__":
    main()
