"""Transcoded instances kept on the node's disk, so a study asked for compressed by a slow
link is encoded once; least recently used first out past a size limit. A cache only:
written without fsync, keyed by the blob's own key (a replaced instance has a new one)."""

import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path


class TranscodeCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._max = max_bytes
        self._lock = threading.Lock()
        self._total = sum(p.stat().st_size for p in root.iterdir() if p.is_file())

    def _path(self, key: str, syntax: str) -> Path:
        return self.root / f"{key}.{syntax}"  # blob keys are hex, syntaxes digits and dots

    def get(self, key: str, syntax: str) -> bytes | None:
        path = self._path(key, syntax)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used
        return data

    def put(self, key: str, syntax: str, data: bytes) -> None:
        if len(data) > self._max:
            return
        fd, temporary = tempfile.mkstemp(dir=self.root, prefix=".part-")
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, self._path(key, syntax))
        with self._lock:
            self._total += len(data)
            if self._total > self._max:
                self._evict()

    def _evict(self) -> None:
        """Remove the least recently used entries until the cache is at 80 % of its limit."""
        entries = []
        for path in self.root.iterdir():
            with contextlib.suppress(OSError):
                stat = path.stat()
                entries.append((stat.st_mtime, stat.st_size, path))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        now = time.time()
        for mtime, size, path in entries:
            if total <= self._max * 0.8:
                break
            if path.name.startswith(".part-") and now - mtime < 60:
                continue  # being written
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size
        self._total = total
