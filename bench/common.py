"""What the benchmarks share: waiting for a server, and sending folders with storescu."""

import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

CLIENT_AET = "BENCH"
ENV = {**os.environ, "TCP_NODELAY": "1"}
"""DCMTK's clients set TCP_NODELAY only when asked to."""


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
