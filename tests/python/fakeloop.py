"""Start the fake Loop API (`fake-loop`) on 127.0.0.1 and talk to its control endpoints.

Used by protocol_check.py and pyairbyte_check.py. The fake is started with
--exit-on-stdin-eof and its stdin kept as a pipe, so it also ends if this process dies
without running its cleanup; `stop()` ends it explicitly, and every wait is time-bounded.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

API_STREAMS = ["subscriptions", "orders", "customers", "products", "activity_logs"]
# endpoint keys of the config's rate_limits: the fake has no limits, so the sync need not pace
FAST_RATE_LIMITS = {
    ep: {"requests": 1000, "per_seconds": 1}
    for ep in ["subscription", "order", "activityLog", "customer", "product"]
}
TOKEN = "fake-token"
# Loop's filters are whole epoch seconds and a sync reads up to (about) one second before it
# starts, so a record changed in the last second is left for the next sync. Tests wait this
# long after a mutation before the incremental read that must see it.
SETTLE_SECONDS = 2.5


def find_binary(name: str, env_var: str) -> Path:
    """The binary from $env_var, else $CARGO_TARGET_DIR/release, else target/release, else PATH."""
    candidates = []
    if os.environ.get(env_var):
        candidates.append(Path(os.environ[env_var]))
    repo = Path(__file__).resolve().parents[2]
    target = Path(os.environ.get("CARGO_TARGET_DIR") or repo / "target")
    if not target.is_absolute():
        target = repo / target
    candidates.append(target / "release" / name)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c.resolve()
    found = shutil.which(name)
    if found:
        return Path(found).resolve()
    sys.exit(f"cannot find the {name} binary: build it (cargo build --release --workspace --bins) "
             f"or set {env_var}")


class FakeLoop:
    def __init__(self, binary: Path, counts: dict[str, int] | None = None, startup_timeout: float = 30):
        args = [str(binary), "--port", "0", "--token", TOKEN, "--exit-on-stdin-eof"]
        for stream, n in (counts or {}).items():
            args += [f"--{stream.replace('_', '-')}", str(n)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=sys.stderr, text=True)
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(startup_timeout)
        if not first or not first[0].strip():
            self.stop()
            raise RuntimeError(f"fake-loop printed no address within {startup_timeout}s: {args}")
        info = json.loads(first[0])
        self.base_url: str = info["base_url"]
        self.root_url: str = info["root_url"].rstrip("/")
        # keep draining stdout so the fake never blocks on a full pipe
        threading.Thread(target=lambda: self.proc.stdout.read(), daemon=True).start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> "FakeLoop":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # control endpoints
    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.root_url + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path} -> HTTP {e.code}: {e.read()[:300]!r}") from e
        return json.loads(text) if text.strip() else None

    def records(self, stream: str) -> list[dict]:
        return self._request("GET", f"/_control/records/{stream}")

    def stats(self) -> Any:
        return self._request("GET", "/_control/stats")

    def mutate(self, body: dict) -> Any:
        return self._request("POST", "/_control/mutate", body)

    def config(self, token: str = TOKEN, **extra: Any) -> dict:
        cfg = {
            "api_token": token,
            "start_date": "2000-01-01T00:00:00Z",
            "base_url": self.base_url,
            "page_size": 50,
            "rate_limits": FAST_RATE_LIMITS,
        }
        cfg.update(extra)
        return cfg
