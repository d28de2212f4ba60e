"""The S3 blob store against an S3-compatible server on 127.0.0.1, over HTTP only."""

import base64
import hashlib
import os
from pathlib import Path

import boto3
import pytest

from storage import NotFound, StorageSettings, StorageUnavailable
from storage.blobs import open_blob_store
from storage.blobs.s3 import S3BlobStore
from storage.staging import StagedFile, StagingWriter

pytestmark = pytest.mark.s3


def _store(tmp_path: Path, s3_url: str, **settings: object) -> S3BlobStore:
    store = open_blob_store(
        StorageSettings(data_dir=tmp_path, blob_url=s3_url, _env_file=None, **settings)
    )
    assert isinstance(store, S3BlobStore)
    return store


def _staged(store: S3BlobStore, data: bytes) -> StagedFile:
    with StagingWriter(store.staging_dir) as writer:
        writer.write(data)
        return writer.finish()


def _object(store: S3BlobStore, key: str) -> dict[str, object]:
    response = boto3.client("s3").head_object(
        Bucket=store.bucket, Key=store.object_key(key), ChecksumMode="ENABLED"
    )
    return dict(response)


@pytest.mark.parametrize("size", [300_000, 2_000_000], ids=["from-memory", "from-the-file"])
def test_a_blob_is_uploaded_with_its_checksum_under_an_orthanc_style_key(
    tmp_path: Path, s3_url: str, size: int
) -> None:
    store = _store(tmp_path, s3_url)
    data = os.urandom(size)
    staged = _staged(store, data)
    key = store.put_staged(staged)
    assert not staged.path.exists()  # the staged copy is gone once S3 has the object
    assert store.object_key(key) == f"archive/{key[:2]}/{key[2:4]}/{key}"
    head = _object(store, key)
    assert head["ContentLength"] == len(data)
    assert head["ContentType"] == "application/dicom"
    with store.open(key) as blob:
        assert blob.read() == data
    assert list(store.keys()) == [key]


def test_a_large_blob_goes_up_in_parts_and_streams_back(tmp_path: Path, s3_url: str) -> None:
    store = _store(tmp_path, s3_url, s3_multipart_mb=5)
    data = os.urandom(12 * 1024 * 1024)
    key = store.put_staged(_staged(store, data))
    assert _object(store, key)["ContentLength"] == len(data)
    digest = hashlib.sha256()
    with store.open(key) as blob:
        while chunk := blob.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_the_arrival_digest_travels_with_the_object_and_is_checked_on_reading(
    tmp_path: Path, s3_url: str
) -> None:
    """S3 checks the SHA-256 computed while the instance arrived, not one of the file."""
    store = _store(tmp_path, s3_url)
    staged = _staged(store, b"the bytes that arrived")
    staged.path.write_bytes(b"bytes changed on disk!")  # same size, other content
    try:
        key = store.put_staged(staged)
    except StorageUnavailable:
        return  # the server compared it on upload (AWS S3, MinIO, Ceph RGW)
    # moto keeps the digest without comparing it: reading back compares it.
    attributes = boto3.client("s3").get_object_attributes(
        Bucket=store.bucket, Key=store.object_key(key), ObjectAttributes=["Checksum"]
    )
    expected = base64.b64encode(hashlib.sha256(b"the bytes that arrived").digest()).decode()
    assert attributes["Checksum"]["ChecksumSHA256"] == expected
    with pytest.raises(OSError, match="reading the object from S3 failed"), store.open(key) as blob:
        blob.read()


def test_server_side_encryption_is_asked_for(tmp_path: Path, s3_url: str) -> None:
    store = _store(tmp_path, s3_url, s3_sse="AES256")
    key = store.put_staged(_staged(store, b"encrypted at rest"))
    assert _object(store, key)["ServerSideEncryption"] == "AES256"


def test_missing_and_foreign_keys(tmp_path: Path, s3_url: str) -> None:
    store = _store(tmp_path, s3_url)
    with pytest.raises(NotFound):
        store.open("0" * 32)
    with pytest.raises(NotFound):
        store.open("../../etc/passwd")
    store.delete("0" * 32)  # deleting what is not there is not an error


def test_an_unreachable_store_is_unavailable(tmp_path: Path, s3_url: str) -> None:
    store = _store(tmp_path, s3_url.replace("s3://", "s3://no-such-bucket-"), s3_max_attempts=1)
    with pytest.raises(StorageUnavailable):
        store.check()
    with pytest.raises(StorageUnavailable):
        store.put_staged(_staged(store, b"nowhere to go"))


def test_a_put_waits_for_no_100_continue(tmp_path: Path, s3_url: str) -> None:
    """One round trip per instance, not two: the body goes with the request."""
    store = _store(tmp_path, s3_url)
    sent: list[dict[str, str | bytes]] = []
    store._client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers))
    )
    store.put_staged(_staged(store, os.urandom(500_000)))
    (headers,) = sent
    assert "Expect" not in headers
    assert int(headers["Content-Length"]) == 500_000
