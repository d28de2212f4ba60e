"""Blobs as objects in an S3-compatible store (AWS S3, MinIO, Ceph RGW), through boto3.

The endpoint, region and credentials come from the standard AWS settings
(``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``..., ``~/.aws``), so the same
archive runs against any of them. Object keys are laid out like Orthanc's,
``<prefix>ab/cd/abcd…``, from the blob's own random key.

An instance is staged in a local folder (hashed as it arrives), then uploaded: in one PUT
carrying its SHA-256, which the server checks before it answers, or, past the multipart
threshold, in parts that each carry theirs, a few at a time and read from the file, never
held in memory. The PUT's success is what makes the blob durable; the staged copy is then
removed (so the local disk needs room only for the instances in flight, and
``PACS_MIN_FREE_MB`` guards that disk). Reads stream the object and have botocore check
its checksum. Throttling and 5xx answers are retried with backoff by botocore
(``standard`` mode), and so is a request that waited ``PACS_S3_TIMEOUT`` seconds for a
connection or for S3's next bytes: a store with S3 gone silent is refused after about
``PACS_S3_TIMEOUT`` times ``PACS_S3_MAX_ATTEMPTS`` seconds, not after a minute a try
(botocore's default).
"""

import base64
import io
import logging
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlparse

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from storage.blobs.base import is_key, new_key
from storage.errors import NotFound, StorageUnavailable
from storage.staging import StagedFile

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3BlobStore:
    def __init__(
        self,
        url: str,
        *,
        staging_dir: Path,
        multipart_mb: int = 16,
        max_attempts: int = 5,
        timeout: float = 5.0,
        server_side_encryption: str | None = None,
        kms_key_id: str | None = None,
        client: Any = None,
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"an S3 blob URL is s3://bucket[/prefix], not {url!r}")
        self.bucket = parsed.netloc
        prefix = parsed.path.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self._staging = staging_dir
        self._staging.mkdir(parents=True, exist_ok=True)
        self._client = client or boto3.client(
            "s3",
            config=Config(
                # "total": botocore's max_attempts counts the retries only, one try fewer.
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
                # botocore waits 60 s by default: five tries of an S3 that stopped answering
                # would hold a C-STORE for five minutes, far past the modality's timeout.
                connect_timeout=timeout,
                read_timeout=timeout,
                max_pool_connections=64,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        # botocore asks "Expect: 100-continue" before every PUT body: one more round trip
        # per instance, 10 to 20 ms to a remote store, for a CT slice of 0.5 MB.
        self._client.meta.events.register("before-sign.s3.PutObject", _no_expect)
        self._transfer = TransferConfig(
            multipart_threshold=multipart_mb * _MIB,
            multipart_chunksize=multipart_mb * _MIB,
            max_concurrency=4,
            use_threads=True,
        )
        self._extra: dict[str, Any] = {"ContentType": "application/dicom"}
        if server_side_encryption:
            self._extra["ServerSideEncryption"] = server_side_encryption
            if kms_key_id:
                self._extra["SSEKMSKeyId"] = kms_key_id

    def __repr__(self) -> str:
        return f"S3BlobStore('s3://{self.bucket}/{self.prefix}')"

    @property
    def staging_dir(self) -> Path:
        return self._staging

    @property
    def stages_durably(self) -> bool:
        return False  # the upload, not the staged file, makes a blob durable

    def object_key(self, key: str) -> str:
        if not is_key(key):
            raise NotFound(f"{key!r} is not a blob key")
        return f"{self.prefix}{key[:2]}/{key[2:4]}/{key}"

    def check(self) -> None:
        """Raise StorageUnavailable unless the bucket can be reached."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(
                f"the bucket {self.bucket!r} cannot be reached: {exc}"
            ) from None

    def put_staged(self, staged: StagedFile, *, key: str | None = None) -> str:
        key = key or new_key()
        try:
            self.upload(staged.path, key=key, size=staged.size, sha256=staged.sha256)
        finally:
            staged.path.unlink(missing_ok=True)
        return key

    def upload(self, path: Path, *, key: str, size: int, sha256: str) -> None:
        """Upload the file at `path` as blob `key`; return once S3 confirmed it.

        Raises StorageUnavailable when the upload fails (after botocore's retries).
        """
        target = self.object_key(key)
        try:
            if size < self._transfer.multipart_threshold:
                with path.open("rb") as body:
                    self._client.put_object(
                        Bucket=self.bucket,
                        Key=target,
                        Body=body,
                        ContentLength=size,
                        ChecksumAlgorithm="SHA256",
                        ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode(),
                        **self._extra,
                    )
            else:
                self._client.upload_file(
                    str(path),
                    self.bucket,
                    target,
                    ExtraArgs={**self._extra, "ChecksumAlgorithm": "SHA256"},
                    Config=self._transfer,
                )
        except (BotoCoreError, ClientError, S3UploadFailedError, OSError) as exc:
            raise StorageUnavailable(f"cannot upload the blob to S3: {exc}") from None

    def is_pending(self, key: str) -> bool:  # noqa: ARG002 (the protocol's signature)
        return False

    def open(self, key: str) -> BinaryIO:
        try:
            response = self._client.get_object(
                Bucket=self.bucket, Key=self.object_key(key), ChecksumMode="ENABLED"
            )
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                raise NotFound(f"blob {key} is missing") from None
            raise StorageUnavailable(f"cannot read blob {key} from S3: {exc}") from None
        except BotoCoreError as exc:
            raise StorageUnavailable(f"cannot read blob {key} from S3: {exc}") from None
        return cast(BinaryIO, io.BufferedReader(_ObjectReader(response["Body"]), _MIB))

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """One ranged GET: a frame costs its own bytes, not the object's."""
        if length <= 0:
            return b""
        try:
            response = self._client.get_object(
                Bucket=self.bucket,
                Key=self.object_key(key),
                Range=f"bytes={offset}-{offset + length - 1}",
            )
            return bytes(response["Body"].read())
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                raise NotFound(f"blob {key} is missing") from None
            if _error_code(exc) == "InvalidRange":
                return b""
            raise StorageUnavailable(f"cannot read blob {key} from S3: {exc}") from None
        except BotoCoreError as exc:
            raise StorageUnavailable(f"cannot read blob {key} from S3: {exc}") from None

    def local_path(self, key: str) -> Path | None:  # noqa: ARG002 (the protocol's signature)
        return None

    def size(self, key: str) -> int | None:
        head = self._head(key)
        return None if head is None else int(head["ContentLength"])

    def modified(self, key: str) -> datetime | None:
        head = self._head(key)
        return None if head is None else cast(datetime, head["LastModified"])

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except NotFound:
            return None
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                return None
            raise StorageUnavailable(f"cannot look up blob {key} in S3: {exc}") from None
        except BotoCoreError as exc:
            raise StorageUnavailable(f"cannot look up blob {key} in S3: {exc}") from None
        return dict(head)

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _error_code(exc) not in _MISSING:
                log.warning("Could not delete blob %s from S3: %s", key, exc)
        except BotoCoreError as exc:
            log.warning("Could not delete blob %s from S3: %s", key, exc)

    def keys(self) -> Iterator[str]:
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                name = str(item["Key"]).rsplit("/", 1)[-1]
                if is_key(name):
                    yield name

    def close(self) -> None:
        """Nothing to do: uploads finish before :meth:`put_staged` returns."""

    def free_bytes(self) -> int | None:
        """The bucket has no end; the local staging folder every instance passes through has."""
        return shutil.disk_usage(self._staging).free


class _ObjectReader(io.RawIOBase):
    """An object's body as a file; a failed read or checksum is an OSError, as from a disk."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._body.read(len(buffer))
        except (BotoCoreError, ClientError) as exc:
            raise OSError(f"reading the object from S3 failed: {exc}") from None
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


def _no_expect(request: Any, **_: Any) -> None:
    if "Expect" in request.headers:
        del request.headers["Expect"]


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
