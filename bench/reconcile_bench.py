#!/usr/bin/env python3
"""Reconciliation benchmark against the bundled fake Loop API and a real `source-loop serve`.

The fake holds --subscriptions/--orders records and sends signed webhooks for its changes
to `serve`, losing every --drop-every-th one. After --touched changes per stream,
`source-loop reconcile` runs, then `reconcile --repair`, then `reconcile` again. Prints,
per run: wall time, peak RSS, API requests per endpoint (from the fake's stats), what the
report found, and the time those requests take at Loop's documented pace (2 per 3 s on
/subscription and /order; the two streams are read concurrently).

Usage: bench/reconcile_bench.py [--bin-dir target/release] [--subscriptions 100000] ...
Talks only to 127.0.0.1 servers it starts and stops.
"""
import argparse, json, os, socket, subprocess, tempfile, time, urllib.request

SECRET = "bench-webhook-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def wait_for(pred, what, limit=120):
    start = time.time()
    while not pred():
        if time.time() - start > limit:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def run_measured(args):
    """(exit code, stdout, wall seconds, peak RSS MiB) of one child."""
    start = time.time()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = p.stdout.read()
    p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    return os.waitstatus_to_exitcode(status), out, time.time() - start, usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("--subscriptions", type=int, default=100_000)
    ap.add_argument("--orders", type=int, default=100_000)
    ap.add_argument("--touched", type=int, default=10_000)
    ap.add_argument("--drop-every", type=int, default=50)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    port = free_port()
    config = os.path.join(tmp, "config.json")
    serve_cfg = {"journal_path": os.path.join(tmp, "journal.sqlite"), "webhook_secrets": [SECRET]}
    json.dump(serve_cfg, open(config, "w"))
    serve = subprocess.Popen([os.path.join(a.bin_dir, "source-loop"), "serve", "--config", config,
                              "--listen", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
    fake = subprocess.Popen([os.path.join(a.bin_dir, "fake-loop"), "--port", "0", "--exit-on-stdin-eof",
                             "--subscriptions", str(a.subscriptions), "--orders", str(a.orders),
                             "--webhook-url", f"http://127.0.0.1:{port}/webhooks/loop",
                             "--webhook-secret", SECRET, "--webhook-drop-every", str(a.drop_every)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(fake.stdout.readline())
        root, base = info["root_url"], info["base_url"]
        fast = {"requests": 1000, "per_seconds": 1}
        json.dump({**serve_cfg, "api_token": "fake-token", "base_url": base, "reconcile_settle_seconds": 0,
                   "rate_limits": {"subscription": fast, "order": fast}}, open(config, "w"))
        for stream in ("subscriptions", "orders"):
            left = a.touched
            while left > 0:
                n = min(left, 1000)
                http(f"{root}/_control/mutate", {"touch": {"stream": stream, "count": n}})
                left -= n
                wait_for(lambda: http(f"{root}/_control/webhooks")["pending"] < 2000, "deliveries")
        wait_for(lambda: http(f"{root}/_control/webhooks")["pending"] == 0, "deliveries")
        print("webhooks:", json.dumps(http(f"{root}/_control/webhooks")))
        time.sleep(1.1)
        src = os.path.join(a.bin_dir, "source-loop")
        for label, extra in (("reconcile", []), ("reconcile --repair", ["--repair"]), ("reconcile again", [])):
            before = http(f"{root}/_control/stats")["requests"]
            code, out, wall, rss = run_measured([src, "reconcile", "--config", config, *extra])
            after = http(f"{root}/_control/stats")["requests"]
            reqs = {k: after.get(k, 0) - before.get(k, 0) for k in ("/subscription", "/order")}
            r = json.loads(out)
            found = {s: {k: len(v[k]) for k in ("missed_webhooks", "api_behind", "only_in_journal")}
                     | {"checked": v["checked"], "repaired": v["repaired"]} for s, v in r["streams"].items()}
            loop_pace = max(reqs.values()) / 2 * 3
            print(f"{label}: exit {code}, {wall:.2f} s, peak RSS {rss:.0f} MiB, requests {reqs}, "
                  f"at Loop's pace ~{loop_pace:.0f} s; {json.dumps(found)}")
    finally:
        fake.stdin.close()
        fake.wait(timeout=30)
        serve.terminate()
        serve.wait(timeout=30)


if __name__ == "__main__":
    main()
