"""Blob stores: durable bytes under opaque keys the archive generates."""

from storage.blobs.base import BlobStore, new_key
from storage.blobs.filesystem import FilesystemBlobStore

__all__ = ["BlobStore", "FilesystemBlobStore", "new_key", "open_blob_store"]


def open_blob_store(url: str) -> BlobStore:
    """Open the blob store named by `url`: a folder path or ``file://`` URL."""
    from pathlib import Path
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return FilesystemBlobStore(Path(parsed.path if parsed.scheme else url))
    raise ValueError(f"unsupported blob store URL scheme {parsed.scheme!r} in {url!r}")
