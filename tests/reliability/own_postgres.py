"""A PostgreSQL cluster of a test's own, to kill: the machine's server is shared by every
test, so the test that crashes a database server makes one (``initdb``, a few seconds).

As root (CI), the server runs as the ``postgres`` user (PostgreSQL refuses root), in a
folder of its own under /tmp; as anyone else, as that user.
"""

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest


def _binaries() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


class OwnPostgres:
    """``with OwnPostgres(port) as database:`` a running cluster; ``database.kill()`` crashes
    it (every process SIGKILLed at once, as a power cut of its machine would),
    ``database.start()`` brings it back through crash recovery (its WAL replayed)."""

    def __init__(self, port: int) -> None:
        binaries = _binaries()
        if binaries is None:
            pytest.skip("needs PostgreSQL's server binaries (/usr/lib/postgresql/*/bin)")
        self.binaries = binaries
        self.port = port
        self._as: list[str] = []
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root, and there is no postgres user to run a server")
            runuser = shutil.which("runuser")
            if runuser is None:
                pytest.skip("running as root without runuser to become the postgres user")
            self._as = [runuser, "-u", "postgres", "--"]
        self.folder = Path(tempfile.mkdtemp(prefix="pacs-own-postgres-"))
        if owner is not None:
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._server: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def __enter__(self) -> Self:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def start(self, timeout: float = 60) -> None:
        """Start the server and return once it takes connections."""
        with self.log.open("ab") as log:
            self._server = subprocess.Popen(
                [
                    *self._as,
                    str(self.binaries / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.folder),
                    "-c",
                    "listen_addresses=127.0.0.1",
                ],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._server.poll() is None, self.log.read_text()
            ready = subprocess.run(
                [str(self.binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"PostgreSQL did not start:\n{self.log.read_text()}")

    def kill(self) -> int:
        """SIGKILL the postmaster and every process it started, at once; how many."""
        assert self._server is not None
        pid_file = self.data / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0])
        victims = [postmaster, *_children(postmaster)]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._server.wait(30)  # runuser (or the postmaster itself) gone
        return len(victims)

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self.binaries / program), *args],
            capture_output=True,
            check=True,
            timeout=120,
        )


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
