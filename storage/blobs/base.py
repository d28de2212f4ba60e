"""The blob store seam (Orthanc's ``IStorageArea``): put, open, delete by opaque key.

Keys are made here from random UUIDs, never from anything a peer sent, so no UID or file
name can steer where bytes land.
"""

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from storage.staging import StagedFile, StagingWriter

_CHUNK = 1 << 20


def new_key() -> str:
    return uuid.uuid4().hex


def is_key(key: str) -> bool:
    """Whether `key` is one this archive makes (32 lowercase hex digits), so it is safe in
    a path or an object name."""
    return len(key) == 32 and all(c in "0123456789abcdef" for c in key)


def stage_blob(blobs: "BlobStore", key: str, directory: Path, *, prefix: str) -> StagedFile:
    """Copy a blob into a staging file in `directory`, hashed on the way.

    Raises:
        NotFound: no such blob.
        OSError: it could not be read (or failed its store's own checksum).
    """
    with StagingWriter(directory, prefix=prefix) as writer:
        with blobs.open(key) as blob:
            while chunk := blob.read(_CHUNK):
                writer.write(chunk)
        return writer.finish()


class BlobStore(Protocol):
    @property
    def staging_dir(self) -> Path:
        """A local folder for staged files, on the same file system as the blobs if local."""
        ...

    @property
    def stages_durably(self) -> bool:
        """Whether a staged file must be fsynced before :meth:`put_staged` (renamed in place)."""
        ...

    def check(self) -> None:
        """Raise StorageUnavailable unless blobs can be written (checked at start-up)."""
        ...

    def put_staged(self, staged: StagedFile, *, key: str | None = None) -> str:
        """Make `staged` durable under a new key and return the key; the staged file is used up.

        `key` is given only when an archive moves: the blob keeps the key it had.
        Raises StorageUnavailable when the store cannot take it.
        """
        ...

    def is_pending(self, key: str) -> bool:
        """Whether the blob is durable on this node only, its upload still to come."""
        ...

    def open(self, key: str) -> BinaryIO:
        """Open the blob for reading; raises NotFound if it is missing."""
        ...

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes of the blob from `offset` (fewer at its end); NotFound if missing."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A path to read the blob from directly, when the store is local."""
        ...

    def size(self, key: str) -> int | None:
        """The blob's size in bytes, or None if there is no such blob."""
        ...

    def modified(self, key: str) -> datetime | None:
        """When the blob was written (UTC), or None if there is no such blob."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob; a missing blob is not an error."""
        ...

    def keys(self) -> Iterator[str]:
        """Every key in the store (for verification and repair)."""
        ...

    def free_bytes(self) -> int | None:
        """Free space for new blobs, when the store can tell."""
        ...

    def close(self) -> None:
        """Finish or hand over background work; the store is not used afterwards."""
        ...
