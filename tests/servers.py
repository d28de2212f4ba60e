"""`pacs serve` as a process, for the tests that need the whole service: start, stop,
kill, and read its archive afterwards."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pynetdicom.sop_class import CTImageStorage, Verification

from storage import Archive, StorageSettings
from tests.auth import ADMIN, PASSWORD, SECRET, http
from tests.conftest import associate


@dataclass
class Server:
    data_dir: Path
    dicom_port: int
    http_port: int
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)
    """More PACS_ settings (a shared database and bucket, for several nodes)."""
    has_admin: bool = False

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PACS_DATA_DIR": str(self.data_dir),
            "PACS_MIN_FREE_MB": "0",
            "PACS_DICOM_PORT": str(self.dicom_port),
            "PACS_HTTP_PORT": str(self.http_port),
            "PACS_LOG_LEVEL": "INFO",
            "PACS_AI_ENABLED": "false",  # on in the tests that are about it
            "PACS_TOKEN_SECRET": SECRET,  # tests.auth's tokens are good here
            **self.settings,
        }

    def pacs(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pacs", *args],
            input=stdin,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start(self) -> None:
        if not self.has_admin:
            added = self.pacs(
                "user", "add", ADMIN, "--role", "admin", "--password-stdin", stdin=PASSWORD
            )
            assert added.returncode == 0 or "exists already" in added.stderr, added.stderr
            self.has_admin = True
        self.log = self.data_dir.parent / f"serve-{time.monotonic_ns()}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pacs", "serve"], env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if http.get(f"http://127.0.0.1:{self.http_port}/health").status_code == 200:
                    assoc = associate(self.dicom_port, Verification)
                    if assoc.is_established:
                        assoc.release()
                        return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"pacs serve did not start:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def children(self) -> list[int]:
        assert self.process is not None
        pid = self.process.pid
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def peak_rss_kib(self) -> int:
        """The largest peak resident size among the server and its listener processes."""
        assert self.process is not None
        peaks = []
        for pid in (self.process.pid, *self.children()):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]))
        return max(peaks)


def send(port: int, paths: list[Path], timeout: float = 30) -> list[int]:
    """C-STORE each file on one association; their statuses. A file not answered within
    `timeout` seconds (a modality's usual wait) fails the test, naming it."""
    assoc = associate(port, CTImageStorage, timeout=timeout)
    statuses = []
    try:
        for number, path in enumerate(paths, 1):
            answer = assoc.send_c_store(path)
            assert "Status" in answer, f"file {number} of {len(paths)} unanswered in {timeout} s"
            statuses.append(int(answer.Status))
    finally:
        assoc.release()
    return statuses


def archive_of(server: Server) -> Archive:
    return Archive.open(StorageSettings(data_dir=server.data_dir, _env_file=None))
