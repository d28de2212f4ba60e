"""Extra DICOM listener processes on the same port, so parallel associations use every core.

One Python process receives on one core (the GIL). ``pacs serve`` therefore runs N listener
processes on the DICOM port (and on the TLS port, when set), bound with SO_REUSEPORT so the
kernel spreads connections across them: its own, plus N-1 started here. Each opens the
archive and reads the TLS files itself; the index database and the blob store keep them
consistent. A listener that dies is started again; when ``pacs serve`` itself dies, its
listeners die with it (PR_SET_PDEATHSIG), as they would in a power cut.
"""

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger(__name__)

RESTART_DELAY = (1.0, 30.0)
"""Backoff between restarts of a listener that keeps dying: first and longest, in seconds."""


def listener_count(requested: int) -> int:
    """How many listener processes to run: as asked, or one per CPU core."""
    return requested or max(1, len(os.sched_getaffinity(0)))


class ListenerPool:
    """Starts, watches and stops the extra listener processes."""

    def __init__(self, settings: Any, count: int) -> None:
        self._values = settings.model_dump()
        self._count = count
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[BaseProcess] = []
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="listener-watch", daemon=True)

    def start(self, timeout: float = 120.0) -> None:
        """Start the listeners and return once each listens (or has failed to start)."""
        started = [self._spawn(index) for index in range(self._count)]
        self._processes = [process for process, _ in started]
        deadline = time.monotonic() + timeout
        for process, ready in started:
            if not ready.wait(max(0.0, deadline - time.monotonic())):
                log.error("DICOM listener %s did not start in time", process.name)
        self._watcher.start()

    def _spawn(self, index: int) -> tuple[BaseProcess, Any]:
        ready = self._context.Event()
        process = self._context.Process(
            target=run_listener,
            args=(self._values, os.getpid(), ready),
            name=f"dicom-listener-{index + 1}",
            daemon=False,
        )
        process.start()
        return process, ready

    def _watch(self) -> None:
        delay = RESTART_DELAY[0]
        while not self._stopping.wait(0.5):
            for index, process in enumerate(self._processes):
                if process.is_alive() or self._stopping.is_set():
                    continue
                log.error(
                    "DICOM listener %s (pid %s) exited with %s; starting it again in %.0f s",
                    process.name,
                    process.pid,
                    process.exitcode,
                    delay,
                )
                if self._stopping.wait(delay):
                    return
                self._processes[index], _ = self._spawn(index)
                delay = min(delay * 2, RESTART_DELAY[1])

    def stop(self, timeout: float = 20.0) -> None:
        self._stopping.set()
        for process in self._processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("DICOM listener %s did not stop; killing it", process.name)
                process.kill()
                process.join(5)


def _die_with(parent_pid: int) -> None:
    """Ask the kernel to kill this process when its parent dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def run_listener(values: dict[str, Any], parent_pid: int, ready: Any = None) -> None:
    """The body of a listener process: serve DICOM until SIGTERM (or SIGINT)."""
    _die_with(parent_pid)
    from dicom_node.node import DicomNode
    from pacs import logging as pacs_logging
    from pacs.settings import Settings
    from storage import Archive

    settings = Settings(**values)
    pacs_logging.configure(settings.log_level, settings.log_format.value)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    archive = Archive.open(settings)
    node = DicomNode(archive, settings, host=settings.host, reuse_port=True)
    node.start()
    # What is loaded by now lives as long as the process. pynetdicom runs a full gc.collect()
    # every 60 connections; over these 110,000 objects it held the GIL for 54 ms, a stall of
    # every association of the process. Frozen, they are not walked: under a millisecond.
    gc.freeze()
    if ready is not None:
        ready.set()
    try:
        stop.wait()
    finally:
        node.stop()
        archive.close()
