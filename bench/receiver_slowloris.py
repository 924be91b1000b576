#!/usr/bin/env python3
"""The webhook receiver under half-open connections (release binaries).

For each scenario: starts `source-loop serve` on 127.0.0.1 with a fresh journal, runs
`loop-webhook-load` (signed deliveries, 5 % redeliveries, HTTP/1.1 keep-alive) while it
holds N connections that sent a request line and never finish their headers, then reads
the receiver's /metrics. Prints one JSON line per scenario: ack p50/p99/max, errors,
when the half-open connections were closed (seconds after opening), and what the
receiver counted as cut.

Scenarios:
  baseline        no half-open connections
  half-open       1500 half-open, the default cap (4096: room for them and the load)
  over-the-cap    1500 half-open, cap 1024: the half-open ones fill it, and the load's
                  connections are refused with 503 until the header timeout frees slots

Usage: bench/receiver_slowloris.py [--bin-dir target/release] [--events 20000]
Talks only to the 127.0.0.1 server it starts and stops; every wait is bounded.
"""
import argparse, json, os, socket, subprocess, sys, tempfile, time, urllib.request

SECRET = "bench-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("loop_webhooks_connections") or line.startswith("loop_webhooks_verified_total"):
            k, v = line.rsplit(" ", 1)
            out[k.replace("loop_webhooks_", "")] = float(v)
    return out


def scenario(bin_dir, name, half_open, extra_config, events):
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        config = {"api_token": "unused", "base_url": "http://127.0.0.1:9", "journal_path": os.path.join(d, "journal.sqlite"),
                  "webhook_secrets": [SECRET], **extra_config}
        cp = os.path.join(d, "config.json")
        json.dump(config, open(cp, "w"))
        serve = subprocess.Popen([os.path.join(bin_dir, "source-loop"), "serve", "--config", cp, "--listen", f"127.0.0.1:{port}"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or serve.poll() is not None:
                        raise SystemExit(f"{name}: serve did not start")
                    time.sleep(0.05)
            load = subprocess.run([os.path.join(bin_dir, "loop-webhook-load"), "--url", f"http://127.0.0.1:{port}/webhooks/loop",
                                   "--secret", SECRET, "--events", str(events), "--concurrency", "64",
                                   "--half-open", str(half_open), "--watch-seconds", "60"],
                                  capture_output=True, text=True, timeout=300)
            lines = load.stdout.strip().splitlines()
            if not lines:
                raise SystemExit(f"{name}: loop-webhook-load printed nothing; stderr:\n{load.stderr}")
            result = json.loads(lines[-1])
            result["scenario"] = name
            result["receiver"] = metrics(port)
            status = open(f"/proc/{serve.pid}/status").read()
            result["receiver_peak_rss_mib"] = round(int(status.split("VmHWM:")[1].split()[0]) / 1024, 1)
            return result
        finally:
            serve.terminate()
            try:
                serve.wait(timeout=20)
            except subprocess.TimeoutExpired:
                serve.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release"))
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--half-open", type=int, default=1500)
    args = ap.parse_args()
    for name, half_open, extra in [
        ("baseline", 0, {}),
        ("half-open", args.half_open, {}),
        ("over-the-cap", args.half_open, {"webhook_max_connections": 1024}),
    ]:
        print(json.dumps(scenario(args.bin_dir, name, half_open, extra, args.events)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
