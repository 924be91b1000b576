#!/usr/bin/env python3
"""Benchmarks of the database loader (release binaries, servers on 127.0.0.1 only).

1. sync: `source-loop sync --into` of N subscriptions into SQLite and into PostgreSQL
   (a throwaway cluster of Debian's binaries), rows/s and the connector's peak RSS, next
   to `read > /dev/null` of the same data (what the loader adds).
2. live: `source-loop serve --into`, deliveries from loop-webhook-load paced at given
   rates (--rates, events/s); the applier's own summary line (receipt to committed row
   p50/p99).

Usage: bench/load_bench.py [--bin-dir target/release] [--sizes 100000,400000] [--events 20000]
       [--rates 1000,5000] [--no-postgres] [--no-live | --no-sync]
"""
import argparse, glob, json, os, shutil, signal, socket, subprocess, sys, tempfile, time

ONLY_SUBS = {"streams": [{"stream": {"name": "subscriptions", "json_schema": {},
                                     "supported_sync_modes": ["full_refresh", "incremental"]},
                          "sync_mode": "incremental", "destination_sync_mode": "append"}]}
SECRET = "bench-secret"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Postgres:
    """A throwaway cluster; as `nobody` when running as root (initdb refuses root)."""

    def __init__(self):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise RuntimeError("no PostgreSQL binaries (apt-get install postgresql)")
        self.bin = os.path.dirname(bins[-1])
        self.dir = tempfile.mkdtemp(prefix="load-bench-pg.")
        self.user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        if self.user:
            shutil.chown(self.dir, "nobody")
        data = os.path.join(self.dir, "data")
        subprocess.run(self.user + [f"{self.bin}/initdb", "-A", "trust", "-U", "postgres", "-D", data],
                       check=True, stdout=subprocess.DEVNULL)
        self.port = free_port()
        # durable settings (fsync on): the numbers are what a real server pays per commit
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir}"
        subprocess.run(self.user + [f"{self.bin}/pg_ctl", "-w", "-s", "-D", data, "-l",
                                    os.path.join(self.dir, "log"), "-o", opts, "start"], check=True)
        self.data = data
        self.n = 0

    def fresh_url(self):
        self.n += 1
        name = f"bench{self.n}"
        subprocess.run([f"{self.bin}/psql", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        "-c", f"CREATE DATABASE {name}"], check=True)
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self):
        subprocess.run(self.user + [f"{self.bin}/pg_ctl", "-s", "-m", "fast", "-D", self.data, "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)


def start_fake(bin_dir, subs):
    p = subprocess.Popen([f"{bin_dir}/fake-loop", "--port", "0", "--token", "bench-token", "--exit-on-stdin-eof",
                          "--subscriptions", str(subs), "--orders", "0", "--customers", "0", "--products", "1",
                          "--activity-logs", "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return p, json.loads(p.stdout.readline())


def config(d, base_url):
    lim = {"requests": 10000, "per_seconds": 1}
    c = {"api_token": "bench-token", "base_url": base_url, "start_date": "2000-01-01T00:00:00Z", "page_size": 50,
         "rate_limits": {k: lim for k in ["subscription", "order", "customer", "product", "activityLog"]},
         "journal_path": os.path.join(d, "journal.sqlite"), "webhook_secrets": [SECRET]}
    path = os.path.join(d, "config.json")
    json.dump(c, open(path, "w"))
    json.dump(ONLY_SUBS, open(os.path.join(d, "catalog.json"), "w"))
    return path


def run_measured(args):
    """Wall time, exit code, stderr and peak RSS (MiB) of one child."""
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode()
    _, status, ru = os.wait4(p.pid, 0)
    return time.monotonic() - t0, os.waitstatus_to_exitcode(status), err, ru.ru_maxrss / 1024


def bench_sync(bin_dir, sizes, pg):
    rows = []
    for n in sizes:
        fake, info = start_fake(bin_dir, n)
        try:
            with tempfile.TemporaryDirectory() as d:
                cfg = config(d, info["base_url"])
                cat = os.path.join(d, "catalog.json")
                targets = [("read > /dev/null", None), ("sqlite", f"sqlite:{d}/loop.db")]
                if pg:
                    targets.append(("postgres", pg.fresh_url()))
                for name, url in targets:
                    if url is None:
                        args = [f"{bin_dir}/source-loop", "read", "--config", cfg, "--catalog", cat]
                    else:
                        args = [f"{bin_dir}/source-loop", "sync", "--config", cfg, "--catalog", cat, "--into", url]
                    wall, code, err, rss = run_measured(args)
                    if code != 0:
                        sys.exit(f"{name} failed: {err[-2000:]}")
                    rows.append((name, n, wall, n / wall, rss))
                    print(f"{name:<18} {n:>9} subscriptions  {wall:7.1f} s  {n / wall:9.0f} rows/s  peak RSS {rss:6.0f} MiB",
                          flush=True)
        finally:
            fake.stdin.close()
            fake.wait()
    return rows


def bench_live(bin_dir, events, pg, rates):
    """Webhook-to-row latency at each paced rate (events/s), concurrency enough for it."""
    for name in ["sqlite"] + (["postgres"] if pg else []):
        for rate_wanted in rates:
            conc = 64
            with tempfile.TemporaryDirectory() as d:
                cfg = config(d, "http://127.0.0.1:9")
                url = f"sqlite:{d}/loop.db" if name == "sqlite" else pg.fresh_url()
                port = free_port()
                serve = subprocess.Popen([f"{bin_dir}/source-loop", "serve", "--config", cfg, "--listen",
                                          f"127.0.0.1:{port}", "--into", url],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                time.sleep(1.5)
                load = subprocess.run([f"{bin_dir}/loop-webhook-load", "--url", f"http://127.0.0.1:{port}/webhooks/loop",
                                       "--secret", SECRET, "--events", str(events), "--concurrency", str(conc),
                                       "--rate", str(rate_wanted)],
                                      capture_output=True, text=True)
                time.sleep(2)  # let the applier drain before stopping
                serve.send_signal(signal.SIGTERM)
                _, err = serve.communicate(timeout=60)
                sent = json.loads(load.stdout.strip().splitlines()[-1]) if load.stdout.strip() else {}
                applied = [l for l in err.splitlines() if "events applied" in l]
                rate = sent.get("events_per_second") or sent.get("throughput_per_s") or sent
                print(f"live {name:<8} paced at {rate_wanted:>5} events/s: sent {rate}; {applied[-1] if applied else err[-500:]}",
                      flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("--sizes", default="100000,400000")
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--rates", default="1000,5000", help="paced delivery rates, events/s")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--no-live", action="store_true", help="only the sync benchmark")
    ap.add_argument("--no-sync", action="store_true", help="only the live benchmark")
    a = ap.parse_args()
    pg = None if a.no_postgres else Postgres()
    try:
        if not a.no_sync:
            bench_sync(a.bin_dir, [int(x) for x in a.sizes.split(",")], pg)
        if not a.no_live:
            bench_live(a.bin_dir, a.events, pg, [int(x) for x in a.rates.split(",")])
    finally:
        if pg:
            pg.stop()


if __name__ == "__main__":
    main()
