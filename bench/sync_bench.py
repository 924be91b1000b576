#!/usr/bin/env python3
"""Benchmarks for source-loop against the bundled fake Loop API (release binaries).

1. rate-limited: every stream at Loop's per-endpoint limits, time-scaled; prints wall time
   divided by the theoretical minimum (the slowest stream's pages x its interval, since
   streams run concurrently) and the 429 count.
2. throughput: no rate limits; records/s with and without schema validation.
3. memory: peak RSS of the connector for a small and a 10x larger data set.

Usage: bench/sync_bench.py [--bin-dir target/release] [--scale 0.02] [--quick]
Talks only to 127.0.0.1 servers it starts and stops.
"""
import argparse, json, math, os, resource, subprocess, sys, tempfile, time, urllib.request

LIMITS = {"subscription": (2, 3.0), "order": (2, 3.0), "activityLog": (2, 3.0), "customer": (1, 1.0), "product": (6, 1.0)}
STREAM_ENDPOINT = {"subscriptions": "subscription", "orders": "order", "customers": "customer", "products": "product", "activity_logs": "activityLog"}
INCREMENTAL = {"subscriptions": "updatedAt", "orders": "updatedAt", "activity_logs": "createdAt"}


def start_fake(bin_dir, counts, extra=()):
    args = [os.path.join(bin_dir, "fake-loop"), "--port", "0", "--token", "bench-token", "--exit-on-stdin-eof",
            "--subscriptions", str(counts["subscriptions"]), "--orders", str(counts["orders"]),
            "--customers", str(counts["customers"]), "--products", str(counts["products"]),
            "--activity-logs", str(counts["activity_logs"]), *extra]
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    info = json.loads(p.stdout.readline())
    return p, info


def stop(p):
    try:
        p.stdin.close()
        p.wait(timeout=10)
    except Exception:
        p.kill()


def catalog(streams):
    return {"streams": [{"stream": {"name": s, "json_schema": {}, "supported_sync_modes": ["full_refresh", "incremental"]},
                         "sync_mode": "incremental" if s in INCREMENTAL else "full_refresh",
                         "destination_sync_mode": "append"} for s in streams]}


def run_read(bin_dir, config, streams):
    with tempfile.TemporaryDirectory() as d:
        cp, kp = os.path.join(d, "config.json"), os.path.join(d, "catalog.json")
        json.dump(config, open(cp, "w"))
        json.dump(catalog(streams), open(kp, "w"))
        t0 = time.monotonic()
        p = subprocess.Popen([os.path.join(bin_dir, "source-loop"), "read", "--config", cp, "--catalog", kp],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        counts, summary, records = {}, "", 0
        for line in p.stdout:
            if line.startswith(b'{"type":"RECORD"'):
                records += 1
                continue
            m = json.loads(line)
            if m["type"] == "LOG" and m["log"]["message"].startswith("sync summary"):
                summary = m["log"]["message"]
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        return {"wall_s": wall, "records": records, "exit": os.waitstatus_to_exitcode(status),
                "cpu_s": ru.ru_utime + ru.ru_stime, "max_rss_mib": ru.ru_maxrss / 1024, "summary": summary}


def stats(root):
    with urllib.request.urlopen(root + "/_control/stats", timeout=10) as r:
        return json.load(r)


def rate_limited(bin_dir, scale, counts):
    fake, info = start_fake(bin_dir, counts, ["--rate-limits", "--rate-scale", str(scale), "--retry-after", "sometimes"])
    try:
        rl = {ep: {"requests": q, "per_seconds": s * scale} for ep, (q, s) in LIMITS.items()}
        config = {"api_token": "bench-token", "base_url": info["base_url"], "rate_limits": rl,
                  "start_date": "2015-01-01T00:00:00Z"}
        res = run_read(bin_dir, config, list(STREAM_ENDPOINT))
        st = stats(info["root_url"])
    finally:
        stop(fake)
    mins = {}
    for s, ep in STREAM_ENDPOINT.items():
        pages = max(1, math.ceil(counts[s] / 50))
        q, per = LIMITS[ep]
        # the connector never bursts: one request per interval, as Loop's limit is stated
        mins[s] = pages * per * scale / q
    slowest = max(mins, key=mins.get)
    res.update({"theoretical_min_s": mins[slowest], "slowest_stream": slowest,
                "ratio": res["wall_s"] / mins[slowest], "http_429": st["rate_limited"],
                "requests": sum(st["requests"].values()),
                "min_pages": sum(max(1, math.ceil(c / 50)) for c in counts.values())})
    return res


def throughput(bin_dir, counts):
    fake, info = start_fake(bin_dir, counts)
    out = {}
    try:
        fast = {ep: {"requests": 10000, "per_seconds": 1} for ep in LIMITS}
        for validate in (True, False):
            config = {"api_token": "bench-token", "base_url": info["base_url"], "rate_limits": fast,
                      "validate_records": validate}
            best = None
            for _ in range(2):
                r = run_read(bin_dir, config, ["subscriptions", "orders"])
                r["records_per_s"] = r["records"] / r["wall_s"]
                best = r if best is None or r["wall_s"] < best["wall_s"] else best
            out["with_validation" if validate else "without_validation"] = best
    finally:
        stop(fake)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release"))
    ap.add_argument("--scale", type=float, default=0.02)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    k = 1 if a.quick else 4
    rl_counts = {"subscriptions": 1000 * k, "orders": 1500 * k, "customers": 300 * k, "products": 40, "activity_logs": 1000 * k}
    print("== rate-limited full sync (Loop's limits x %.3f time scale)" % a.scale, flush=True)
    r = rate_limited(a.bin_dir, a.scale, rl_counts)
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}, indent=1), flush=True)
    print("== throughput without rate limits", flush=True)
    tp_counts = {"subscriptions": 20000 * k, "orders": 30000 * k, "customers": 10, "products": 5, "activity_logs": 10}
    t = throughput(a.bin_dir, tp_counts)
    for name, r in t.items():
        print(f"{name}: {r['records']} records in {r['wall_s']:.2f}s = {r['records_per_s']:.0f} records/s end to end; "
              f"connector CPU {r['cpu_s']:.2f}s = {r['records'] / max(r['cpu_s'], 1e-9):.0f} records per CPU-second; peak RSS {r['max_rss_mib']:.1f} MiB", flush=True)
    print("== memory: peak RSS at 1x and 4x data", flush=True)
    small = {"subscriptions": 5000, "orders": 5000, "customers": 10, "products": 5, "activity_logs": 10}
    big = {k2: v * 4 for k2, v in small.items()}
    for name, c in (("1x", small), ("4x", big)):
        m = throughput(a.bin_dir, c)["without_validation"]
        print(f"{name}: {m['records']} records, peak RSS {m['max_rss_mib']:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
