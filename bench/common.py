"""What the benchmarks share: waiting for a server, signing in to it, and sending folders
with storescu."""

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

CLIENT_AET = "BENCH"
ENV = {**os.environ, "TCP_NODELAY": "1"}
"""DCMTK's clients set TCP_NODELAY only when asked to."""
SERVER_ENV = {**ENV, "PACS_RATE_LIMIT": "1000000/minute"}
"""For `pacs serve`: a benchmark measures the archive, not the per-user rate limit."""
ADMIN = "bench-admin"
PASSWORD = "a password for benchmarks only"  # noqa: S105 - a throw-away archive's user


def wait(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


def sign_in(env: Mapping[str, str], http_port: int) -> dict[str, str]:
    """Wait for the `pacs serve` that `env` configures (started or about to start), add ADMIN
    to its archive (`pacs user add`, as an administrator would, once the server has made
    the index) and sign in by POST /auth/token, as a client would: the Authorization header
    for our HTTP API."""
    base = f"http://127.0.0.1:{http_port}"
    wait(lambda: http_ok(f"{base}/health"), "pacs serve")
    added = subprocess.run(
        [sys.executable, "-m", "pacs", "user", "add", ADMIN, "--role", "admin", "--password-stdin"],
        input=f"{PASSWORD}\n",
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if added.returncode != 0 and "exists already" not in added.stderr:
        raise RuntimeError(f"pacs user add failed: {added.stderr[-500:]}")
    response = httpx.post(f"{base}/auth/token", data={"username": ADMIN, "password": PASSWORD})
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def storescu(aet: str, port: int, folders: list[Path]) -> float:
    """Send each folder over its own association, all at once; return the wall time."""
    started = time.perf_counter()
    clients = [
        subprocess.Popen(
            ["storescu", "+sd", "-aet", CLIENT_AET, "-aec", aet, "127.0.0.1", str(port), str(f)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for f in folders
    ]
    failures = [c.stderr.read().decode() for c in clients if c.wait() != 0 and c.stderr]
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"storescu failed against {aet}: {failures[0][-500:]}")
    return elapsed
