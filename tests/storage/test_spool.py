"""S3 behind a local spool: acknowledged once fsynced here, uploaded behind, nothing lost.

An S3 outage is made real: the bucket does not exist yet, so the server refuses every
upload until the test creates it.
"""

import base64
import fcntl
import hashlib
import os
import time
from pathlib import Path

import boto3
import pytest

from storage import (
    Archive,
    Commitments,
    FailureReason,
    Source,
    StorageSettings,
    StorageUnavailable,
    stage_file,
)
from storage.blobs import open_blob_store
from storage.blobs.spool import SpooledBlobStore
from storage.staging import StagedFile, StagingWriter
from tests import factories

pytestmark = [pytest.mark.s3]


def _settings(tmp_path: Path, url: str, **values: object) -> StorageSettings:
    defaults: dict[str, object] = {"s3_spool_mb": 64, "s3_max_attempts": 1, "min_free_mb": 0}
    return StorageSettings(data_dir=tmp_path, blob_url=url, _env_file=None, **defaults | values)


def _store(tmp_path: Path, url: str, **values: object) -> SpooledBlobStore:
    store = open_blob_store(_settings(tmp_path, url, **values))
    assert isinstance(store, SpooledBlobStore)
    return store


def _staged(store: SpooledBlobStore, data: bytes) -> StagedFile:
    with StagingWriter(store.staging_dir) as writer:
        writer.write(data)
        return writer.finish()


@pytest.fixture
def down_url(s3_url: str) -> str:
    """A bucket that does not exist until the test creates it: S3 refuses every upload."""
    return s3_url.replace("s3://", "s3://later-")


def _bring_up(url: str) -> None:
    boto3.client("s3").create_bucket(Bucket=url.removeprefix("s3://").split("/")[0])


def _s3_checksum(store: SpooledBlobStore, key: str) -> str:
    attributes = boto3.client("s3").get_object_attributes(
        Bucket=store.remote.bucket, Key=store.remote.object_key(key), ObjectAttributes=["Checksum"]
    )
    return str(attributes["Checksum"]["ChecksumSHA256"])


def _b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_a_blob_is_durable_here_at_once_and_in_s3_once_drained(tmp_path: Path, s3_url: str) -> None:
    store = _store(tmp_path, s3_url)
    data = os.urandom(300_000)
    key = store.put_staged(_staged(store, data))
    with store.open(key) as blob:  # readable at once, from the spool or from S3
        assert blob.read() == data
    assert store.drain()
    assert not store.is_pending(key)
    assert list(store.spool.keys()) == []  # the local copy is gone once S3 confirmed it
    assert _s3_checksum(store, key) == _b64(data)
    with store.remote.open(key) as blob:
        assert blob.read() == data
    store.close()


def test_an_s3_outage_is_absorbed_by_the_spool_and_drained_when_s3_returns(
    tmp_path: Path, down_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path, down_url)
    blobs = {store.put_staged(_staged(store, os.urandom(50_000 + i))): i for i in range(5)}
    assert all(store.is_pending(key) for key in blobs)
    assert not store.drain(timeout=1.0)
    assert "its upload will be retried" in caplog.text
    _bring_up(down_url)
    assert store.drain()
    assert sorted(store.remote.keys()) == sorted(blobs)
    store.close()


def test_blobs_left_by_a_killed_process_are_uploaded_at_the_next_start(
    tmp_path: Path, down_url: str
) -> None:
    first = _store(tmp_path, down_url)
    data = os.urandom(200_000)
    key = first.put_staged(_staged(first, data))
    first.close()  # as good as killed: the upload never succeeded
    assert first.is_pending(key)
    _bring_up(down_url)
    second = _store(tmp_path, down_url)
    deadline = time.monotonic() + 10
    while second.is_pending(key) and time.monotonic() < deadline:
        time.sleep(0.05)  # no drain(): the sweep at start finds it by itself
    assert not second.is_pending(key)
    assert _s3_checksum(second, key) == _b64(data)  # hashed again from the spooled file
    second.close()


def test_a_blob_another_process_is_uploading_is_left_to_it(tmp_path: Path, down_url: str) -> None:
    first = _store(tmp_path, down_url)
    key = first.put_staged(_staged(first, b"being uploaded by another process"))
    first.close()
    _bring_up(down_url)
    with first.spool.path_of(key).open("rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        second = _store(tmp_path, down_url)
        second.sweep(min_age=0.0)
        time.sleep(0.5)
        assert second.is_pending(key)
        assert list(second.remote.keys()) == []
    assert second.drain()  # the lock is gone: now this process takes it
    assert list(second.remote.keys()) == [key]
    second.close()


def test_past_the_spool_limit_blobs_go_straight_to_s3(tmp_path: Path, s3_url: str) -> None:
    store = _store(tmp_path, s3_url, s3_spool_mb=1)
    key = store.put_staged(_staged(store, os.urandom(2 * 1024 * 1024)))
    assert not store.is_pending(key)  # acknowledged only after S3 confirmed it
    assert list(store.remote.keys()) == [key]
    store.close()


def test_with_s3_down_and_the_spool_full_stores_are_refused(tmp_path: Path, down_url: str) -> None:
    store = _store(tmp_path, down_url, s3_spool_mb=1)
    store.put_staged(_staged(store, os.urandom(700_000)))
    with pytest.raises(StorageUnavailable):
        store.put_staged(_staged(store, os.urandom(700_000)))
    store.close()


def test_storage_commitment_waits_for_s3(tmp_path: Path, down_url: str) -> None:
    """The archive commits to what is in the object store, not to one node's disk."""
    settings = _settings(tmp_path / "archive", down_url)
    ds = factories.image()
    item = (ds.SOPClassUID, ds.SOPInstanceUID)
    with Archive.open(settings) as archive:
        staged = stage_file(factories.write(ds, tmp_path / "src"), archive.staging_dir)
        archive.store(staged, source=Source("dimse", aet="CT1"))
        commitments = Commitments(archive, owner="node-a:1")
        waiting = commitments.evaluate([item])
        assert (waiting.committed, waiting.failed, waiting.uploading) == ([], [], 1)
        _bring_up(down_url)
        assert isinstance(archive.blobs, SpooledBlobStore)
        assert archive.blobs.drain()
        assert commitments.evaluate([item]).committed == [item]


def test_storage_commitment_stops_waiting_for_s3_in_the_end(tmp_path: Path, down_url: str) -> None:
    settings = _settings(tmp_path / "archive", down_url)
    ds = factories.image()
    item = (ds.SOPClassUID, ds.SOPInstanceUID)
    with Archive.open(settings) as archive:
        staged = stage_file(factories.write(ds, tmp_path / "src"), archive.staging_dir)
        archive.store(staged, source=Source("dimse", aet="CT1"))
        given_up = Commitments(archive, owner="node-a:1").evaluate([item], stop_waiting=True)
        assert given_up.failed == [(*item, FailureReason.NOT_UPLOADED)]
        assert given_up.uploading == 0
