"""Blobs as files in a folder tree, laid out like Orthanc's: ``ab/cd/abcd…``.

A blob becomes durable in the textbook order: the staged file is fsynced, renamed into
place, and its folder fsynced. Staged files live in ``.staging`` under the same root, so the
rename never crosses file systems.

Keys are random, but a process gives a run of consecutive blobs the same first four digits
(the same folder): creating ``ab/cd`` costs two directory fsyncs, which a fresh archive
would otherwise pay for nearly every instance of its first tens of thousands.
"""

import contextlib
import errno
import os
import secrets
import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from storage.blobs.base import is_key
from storage.errors import NotFound, StorageUnavailable
from storage.staging import StagedFile

_STAGING = ".staging"
FOLDER_RUN = 256
"""Consecutive blobs a process puts in one ``ab/cd`` folder."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._staging = self.root / _STAGING
        self._staging.mkdir(parents=True, exist_ok=True)
        self._folder_lock = threading.Lock()
        self._folder = ""
        self._folder_left = 0

    def __repr__(self) -> str:
        return f"FilesystemBlobStore({str(self.root)!r})"

    @property
    def staging_dir(self) -> Path:
        return self._staging

    @property
    def stages_durably(self) -> bool:
        return True

    def path_of(self, key: str) -> Path:
        if not is_key(key):
            raise NotFound(f"{key!r} is not a blob key")
        return self.root / key[:2] / key[2:4] / key

    def check(self) -> None:
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"the blob folder {self.root} is not writable")

    def new_key(self) -> str:
        """A random key whose folder is shared with the blobs just before and after it."""
        with self._folder_lock:
            if self._folder_left == 0:
                self._folder, self._folder_left = secrets.token_hex(2), FOLDER_RUN
            self._folder_left -= 1
            folder = self._folder
        return folder + uuid.uuid4().hex[4:]

    def put_staged(self, staged: StagedFile, *, key: str | None = None) -> str:
        key = key or self.new_key()
        target = self.path_of(key)
        try:
            self._make_parents(target.parent)
            if not staged.synced:
                fsync_file(staged.path)
            try:
                os.rename(staged.path, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                self._copy_across(staged.path, target)
            fsync_dir(target.parent)
        except OSError as exc:
            staged.path.unlink(missing_ok=True)
            target.unlink(missing_ok=True)
            raise StorageUnavailable(f"cannot write blob: {exc.strerror or exc}") from None
        return key

    def _make_parents(self, folder: Path) -> None:
        """Create ``ab/cd`` as needed, fsyncing each parent whose entries changed."""
        if folder.is_dir():
            return
        for directory in (folder.parent, folder):
            if not directory.is_dir():
                directory.mkdir(exist_ok=True)
                fsync_dir(directory.parent)

    @staticmethod
    def _copy_across(source: Path, target: Path) -> None:
        partial = target.with_name(target.name + ".part")
        with source.open("rb") as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.rename(partial, target)
        source.unlink()

    def is_pending(self, key: str) -> bool:  # noqa: ARG002 (the protocol's signature)
        return False

    def open(self, key: str) -> BinaryIO:
        try:
            return self.path_of(key).open("rb")
        except FileNotFoundError:
            raise NotFound(f"blob {key} is missing") from None

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        with self.open(key) as blob:
            blob.seek(offset)
            return blob.read(length)

    def local_path(self, key: str) -> Path | None:
        return self.path_of(key)

    def size(self, key: str) -> int | None:
        try:
            return self.path_of(key).stat().st_size
        except (FileNotFoundError, NotFound):
            return None

    def modified(self, key: str) -> datetime | None:
        try:
            return datetime.fromtimestamp(self.path_of(key).stat().st_mtime, UTC)
        except (FileNotFoundError, NotFound):
            return None

    def delete(self, key: str) -> None:
        with contextlib.suppress(NotFound):
            self.path_of(key).unlink(missing_ok=True)

    def keys(self) -> Iterator[str]:
        for first in sorted(self.root.glob("[0-9a-f][0-9a-f]")):
            for path in sorted(first.glob("[0-9a-f][0-9a-f]/*")):
                if is_key(path.name) and path.is_file():
                    yield path.name

    def free_bytes(self) -> int | None:
        return shutil.disk_usage(self.root).free

    def close(self) -> None:
        """Nothing to do: every blob is durable when :meth:`put_staged` returns."""
