"""Blob stores: durable bytes under opaque keys the archive generates."""

from pathlib import Path
from urllib.parse import urlparse

from storage.blobs.base import BlobStore, new_key, stage_blob
from storage.blobs.filesystem import FilesystemBlobStore
from storage.config import StorageSettings

__all__ = ["BlobStore", "FilesystemBlobStore", "new_key", "open_blob_store", "stage_blob"]


def open_blob_store(settings: StorageSettings) -> BlobStore:
    """The blob store named by ``PACS_BLOB_URL``: a folder, ``file://`` or ``s3://`` URL."""
    url = settings.resolved_blob_url
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return FilesystemBlobStore(Path(parsed.path if parsed.scheme else url))
    if parsed.scheme == "s3":
        from storage.blobs.s3 import S3BlobStore  # boto3 loads only when asked for

        remote = S3BlobStore(
            url,
            staging_dir=(settings.data_dir / "staging").resolve(),
            multipart_mb=settings.s3_multipart_mb,
            max_attempts=settings.s3_max_attempts,
            timeout=settings.s3_timeout,
            server_side_encryption=settings.s3_sse,
            kms_key_id=settings.s3_kms_key_id,
        )
        if not settings.s3_spool_mb:
            return remote
        from storage.blobs.spool import SpooledBlobStore

        return SpooledBlobStore(
            remote,
            (settings.data_dir / "spool").resolve(),
            max_pending_mb=settings.s3_spool_mb,
            uploaders=settings.s3_uploaders,
        )
    raise ValueError(f"unsupported blob store URL scheme {parsed.scheme!r} in {url!r}")
