"""Pixel work (transcoding, rendering) in worker processes with a memory cap.

Decoding compressed pixel data is where hostile files hurt: a JPEG 2000 codestream that
declares 65535 x 65535 pixels, a frame count in the millions. The API process never
decodes: it hands the file's path to a small pool of worker processes, each started with
an address-space limit (``PACS_DECODE_MEMORY_MB``) and a time limit per image, so such a
file costs the pool (which is replaced; requests in flight on it fail too) and a 406,
never the server. It also keeps the CPU-heavy codecs off the API's interpreter lock.
"""

import logging
import multiprocessing
import resource
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from storage import CannotTranscode

log = logging.getLogger(__name__)


def _limit_memory(limit_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def _transcode(path: str, target: str) -> bytes:
    from storage.transcode import transcode

    try:
        return transcode(Path(path), target)
    except MemoryError:
        raise CannotTranscode("the image needs more memory than the decoder may use") from None


def _render(path: str, frame_index: int, options: Any) -> bytes:
    from pydicom import dcmread
    from pydicom.pixels.utils import pixel_array

    from viewer_api.dicomweb.rendering import render

    try:
        header = dcmread(path, stop_before_pixels=True, force=True)
        pixels = pixel_array(path, index=frame_index)
        return render(pixels, header, options)
    except MemoryError:
        raise CannotTranscode("the image needs more memory than the decoder may use") from None
    except Exception as exc:  # whatever a codec makes of a hostile file: this image fails
        raise CannotTranscode(f"the image cannot be decoded: {exc}") from None


class Decoder:
    def __init__(self, *, workers: int, memory_mb: int, timeout: float = 60.0) -> None:
        self._workers = workers
        self._limit = memory_mb * 1024 * 1024
        self._timeout = timeout
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self._workers,
                    mp_context=multiprocessing.get_context("forkserver"),
                    initializer=_limit_memory,
                    initargs=(self._limit,),
                )
            return self._pool

    def _call(self, function: Any, *args: Any) -> bytes:
        executor = self._executor()
        try:
            return bytes(executor.submit(function, *args).result(timeout=self._timeout))
        except BrokenProcessPool:
            log.warning("A pixel worker died (a hostile or huge image?); starting new ones")
            self._replace(executor, kill=False)
            raise CannotTranscode("the image could not be decoded within the limits") from None
        except TimeoutError:
            log.warning("A pixel worker took over %.0f s; starting new ones", self._timeout)
            self._replace(executor, kill=True)
            raise CannotTranscode(
                f"the image was not decoded within {self._timeout:.0f} s"
            ) from None

    def _replace(self, executor: ProcessPoolExecutor, *, kill: bool) -> None:
        """Start a new pool for the next request; the old one's workers are stopped (a
        stuck codec does not listen, so a timed-out pool's are killed)."""
        with self._lock:
            if self._pool is executor:
                self._pool = None
        if kill:
            for process in list(getattr(executor, "_processes", {}).values()):
                process.kill()
        executor.shutdown(wait=False, cancel_futures=True)

    def transcode(self, path: Path, target: str) -> bytes:
        """The file at `path` in `target`; raises CannotTranscode."""
        return self._call(_transcode, str(path), target)

    def render(self, path: Path, frame_index: int, options: Any) -> bytes:
        """One frame of the file at `path` as an image; raises CannotTranscode."""
        return self._call(_render, str(path), frame_index, options)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
