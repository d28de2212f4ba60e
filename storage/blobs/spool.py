"""S3 behind a durable local spool: instances acknowledged at disk speed, uploaded behind.

A modality sends a CT series over one association one slice at a time, waiting for each
answer. If the answer waits for S3, every slice pays the round trip to the object store
(10 to 20 ms across a province) on top of its own transfer. With ``PACS_S3_SPOOL_MB`` set,
a blob is made durable the way the folder store makes it (fsync, rename, fsync the
folder) in a local spool, the instance is indexed and acknowledged, and uploader threads
carry it to S3 with its SHA-256, many at once, deleting the local copy only once S3
confirmed it. What is spooled survives a crash of the process: every process of the node
sweeps the spool at start and then every few seconds; a file lock keeps two of them from
uploading one blob at once.

Until its upload is confirmed, a blob lives on this node's disk only: it is readable here,
not yet from other nodes, and Storage Commitment does not commit it (the archive commits to
what is in the object store). When more than the configured bytes are waiting (S3 slow or
down), new blobs go straight to S3 as without a spool, so an outage turns into "out of
resources" answers instead of a full disk.
"""

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from storage.blobs.filesystem import FilesystemBlobStore
from storage.blobs.s3 import S3BlobStore
from storage.errors import NotFound, StorageUnavailable
from storage.staging import StagedFile

log = logging.getLogger(__name__)

SWEEP_SECONDS = 10.0
"""How often the spool is swept for blobs no upload of this process has in hand."""


class SpooledBlobStore:
    def __init__(
        self,
        remote: S3BlobStore,
        spool_dir: Path,
        *,
        max_pending_mb: int,
        uploaders: int = 8,
        sweep_seconds: float = SWEEP_SECONDS,
    ) -> None:
        self.remote = remote
        self.spool = FilesystemBlobStore(spool_dir)
        self._max_pending = max_pending_mb * 1024 * 1024
        self._lock = threading.Lock()
        self._spooled: dict[str, int] = {}  # key -> size of each blob seen in the spool
        self._in_hand: set[str] = set()  # of those, the ones queued or uploading here
        self._deleted: set[str] = set()  # of those, the ones deleted meanwhile
        self._failed: set[str] = set()  # whose upload from here failed: retried at each sweep
        self._over_limit_logged = False
        self._pool = ThreadPoolExecutor(max_workers=uploaders, thread_name_prefix="s3-upload")
        self._stop = threading.Event()
        self._sweep_seconds = sweep_seconds
        self._sweeper = threading.Thread(target=self._sweep_loop, name="s3-spool", daemon=True)
        self._sweeper.start()

    def __repr__(self) -> str:
        return f"SpooledBlobStore({self.remote!r}, spool={str(self.spool.root)!r})"

    @property
    def staging_dir(self) -> Path:
        return self.spool.staging_dir

    @property
    def stages_durably(self) -> bool:
        return True

    @property
    def pending_bytes(self) -> int:
        """Bytes in the node's spool, waiting for S3 (as this process last saw it)."""
        with self._lock:
            return sum(self._spooled.values())

    def check(self) -> None:
        self.spool.check()
        self.remote.check()

    def put_staged(self, staged: StagedFile, *, key: str | None = None) -> str:
        pending = self.pending_bytes
        if pending + staged.size > self._max_pending:
            if not self._over_limit_logged:
                self._over_limit_logged = True
                log.warning(
                    "%d MiB wait in the spool for S3 (PACS_S3_SPOOL_MB is %d): new instances "
                    "are uploaded before they are acknowledged until it drains",
                    pending // 2**20,
                    self._max_pending // 2**20,
                )
            return self.remote.put_staged(staged, key=key)
        self._over_limit_logged = False
        key = self.spool.put_staged(staged, key=key)
        self._hand(key, staged.size, staged.sha256)
        return key

    def is_pending(self, key: str) -> bool:
        return self.spool.size(key) is not None

    def open(self, key: str) -> BinaryIO:
        try:
            return self.spool.open(key)
        except NotFound:
            return self.remote.open(key)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            return self.spool.read_range(key, offset, length)
        except NotFound:
            return self.remote.read_range(key, offset, length)

    def local_path(self, key: str) -> Path | None:  # noqa: ARG002 (the protocol's signature)
        return None  # a spooled file may be uploaded and removed while a reader holds its path

    def size(self, key: str) -> int | None:
        size = self.spool.size(key)
        return size if size is not None else self.remote.size(key)

    def modified(self, key: str) -> datetime | None:
        modified = self.spool.modified(key)
        return modified if modified is not None else self.remote.modified(key)

    def delete(self, key: str) -> None:
        with self._lock:
            self._spooled.pop(key, None)
            if key in self._in_hand:
                self._deleted.add(key)  # an upload under way deletes what it uploaded
        self.spool.delete(key)
        self.remote.delete(key)

    def keys(self) -> Iterator[str]:
        spooled = set(self.spool.keys())
        yield from sorted(spooled)
        for key in self.remote.keys():  # noqa: SIM118 (a store, not a dict)
            if key not in spooled:
                yield key

    def free_bytes(self) -> int | None:
        return self.spool.free_bytes()

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until nothing is waiting for upload (sweeping first); False on timeout."""
        self.sweep(min_age=0.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = not self._in_hand
            if idle and not any(True for _ in self.spool.keys()):  # noqa: SIM118
                return True
            if idle:
                self.sweep(min_age=0.0)
            time.sleep(0.05)
        return False

    def close(self) -> None:
        """Stop sweeping; let running uploads finish. What is left stays spooled for the next
        start (or for another process of this node)."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- uploading -----------------------------------------------------------------------

    def sweep(self, *, min_age: float = 2 * SWEEP_SECONDS) -> int:
        """Hand every spooled blob that no upload here has in hand and that is older than
        `min_age` seconds (younger ones are likely another process's), or whose upload from
        here failed (S3 down: the next sweep after it returns takes them), to the uploaders."""
        cutoff = time.time() - min_age
        handed = 0
        present = set()
        with self._lock:
            failed = set(self._failed)
        for key in self.spool.keys():  # noqa: SIM118
            present.add(key)
            if key in self._in_hand:
                continue
            try:
                stat = self.spool.path_of(key).stat()
            except FileNotFoundError:
                continue
            with self._lock:
                self._spooled[key] = stat.st_size
            if stat.st_mtime <= cutoff or key in failed:
                handed += self._hand(key, stat.st_size, None)
        with self._lock:  # uploaded by another process since
            for key in self._spooled.keys() - present - self._in_hand:
                del self._spooled[key]
            self._failed &= present
        return handed

    def _sweep_loop(self) -> None:
        min_age = 0.0  # at start, whatever a previous run left
        while not self._stop.is_set():
            try:
                found = self.sweep(min_age=min_age)
                if found and min_age == 0.0:
                    log.info("%d spooled instances from an earlier run are being uploaded", found)
            except OSError as exc:
                log.error("Cannot read the S3 spool folder %s: %s", self.spool.root, exc)
            except RuntimeError:  # the pool was shut down under us
                return
            min_age = 2 * self._sweep_seconds
            self._stop.wait(self._sweep_seconds)

    def _hand(self, key: str, size: int, sha256: str | None) -> int:
        with self._lock:
            if key in self._in_hand:
                return 0
            self._in_hand.add(key)
            self._spooled[key] = size
        try:
            self._pool.submit(self._upload, key, sha256)
        except RuntimeError:  # closing: it stays spooled for the next start
            self._release(key, gone=False)
            return 0
        return 1

    def _release(self, key: str, *, gone: bool, failed: bool = False) -> None:
        with self._lock:
            self._in_hand.discard(key)
            self._deleted.discard(key)
            if failed:
                self._failed.add(key)
            else:
                self._failed.discard(key)
            if gone:
                self._spooled.pop(key, None)

    def _upload(self, key: str, sha256: str | None) -> None:
        path = self.spool.path_of(key)
        gone = failed = False
        try:
            with path.open("rb") as file:
                try:
                    fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return  # another process of this node is uploading it
                stat = os.fstat(file.fileno())
                if stat.st_nlink == 0:
                    gone = True  # uploaded and removed while we waited for the lock
                    return
                digest = sha256 or _sha256(file)
                self.remote.upload(path, key=key, size=stat.st_size, sha256=digest)
                # Deleted while it went up (by this process or another of the node): the
                # file's last link is gone, so the object must go too.
                deleted = key in self._deleted or os.fstat(file.fileno()).st_nlink == 0
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                gone = True
                if deleted:
                    self.remote.delete(key)
        except FileNotFoundError:
            gone = True  # uploaded by another process, or deleted
        except (StorageUnavailable, OSError) as exc:
            failed = True
            log.warning("Blob %s stays in the spool; its upload will be retried: %s", key, exc)
        except Exception:  # an uploader thread must report, never die silently
            failed = True
            log.exception("Blob %s stays in the spool after an unexpected error", key)
        finally:
            self._release(key, gone=gone, failed=failed)


def _sha256(file: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := file.read(1 << 20):
        digest.update(chunk)
    file.seek(0)
    return digest.hexdigest()
