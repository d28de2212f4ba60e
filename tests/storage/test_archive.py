"""Storing: durable blob, committed rows, the duplicate rules, and nothing left on failure."""

import hashlib
import logging
import os
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from storage import (
    Archive,
    DuplicatePolicy,
    InconsistentInstance,
    Level,
    Outcome,
    Source,
    StorageSettings,
    StorageUnavailable,
    build_query,
    stage_file,
)
from storage.blobs import FilesystemBlobStore, open_blob_store
from storage.blobs.s3 import S3BlobStore
from storage.blobs.spool import SpooledBlobStore
from storage.index.engine import create_index_engine, migrate
from storage.index.tables import AuditEvent, Change, Instance
from tests import factories

SOURCE = Source("dimse", aet="CT1", address="10.0.0.5", hospital="BVDKLD")


def put(archive: Archive, path: Path) -> Outcome:
    return archive.store(stage_file(path, archive.staging_dir), source=SOURCE).outcome


def count(archive: Archive, table: type) -> int:
    with archive.read() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def blob_files(archive: Archive) -> list[str]:
    """The blobs, once uploads in flight have ended (a blob deleted while it was going up
    to S3 is deleted there when its upload ends)."""
    if isinstance(archive.blobs, SpooledBlobStore):
        assert archive.blobs.drain()
    return list(archive.blobs.keys())


def test_a_stored_instance_keeps_its_bytes_and_its_digest(archive: Archive, tmp_path: Path) -> None:
    source = factories.write(factories.image(), tmp_path / "src")
    assert put(archive, source) is Outcome.STORED
    (stored,) = list(archive.iter_instances())
    with archive.blobs.open(stored.blob_key) as blob:
        data = blob.read()
    assert data[128:] == factories.dataset_bytes(source)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.size == len(data)


def test_blob_keys_come_from_the_archive_not_from_uids(archive: Archive, tmp_path: Path) -> None:
    ds = factories.image()
    put(archive, factories.write(ds, tmp_path / "src"))
    (key,) = blob_files(archive)
    assert ds.SOPInstanceUID not in key
    assert len(key) == 32
    blobs = archive.blobs
    if isinstance(blobs, SpooledBlobStore):
        names = [str(p) for p in blobs.spool.root.rglob("*")]
        assert blobs.drain()
        blobs = blobs.remote
    else:
        names = []
    if isinstance(blobs, FilesystemBlobStore):
        names += [str(p) for p in blobs.root.rglob("*")]
    else:
        assert isinstance(blobs, S3BlobStore)
        names += [blobs.object_key(k) for k in blobs.keys()]  # noqa: SIM118
    assert names
    assert not any(ds.StudyInstanceUID in name or ds.SOPInstanceUID in name for name in names)


def test_rows_outbox_and_audit_commit_together(archive: Archive, tmp_path: Path) -> None:
    ds = factories.image()
    put(archive, factories.write(ds, tmp_path / "src"))
    with archive.read() as conn:
        change = conn.execute(select(Change)).one()
        audit = conn.execute(select(AuditEvent)).one()
    assert change.sop_instance_uid == ds.SOPInstanceUID
    assert change.kind == "stored"
    assert (audit.action, audit.actor, audit.source_address, audit.study_instance_uid) == (
        "store",
        "CT1",
        "10.0.0.5",
        ds.StudyInstanceUID,
    )


def test_the_same_bytes_again_store_nothing_new(archive: Archive, tmp_path: Path) -> None:
    path = factories.write(factories.image(), tmp_path / "src")
    assert put(archive, path) is Outcome.STORED
    assert put(archive, path) is Outcome.ALREADY_PRESENT
    assert count(archive, Instance) == 1
    assert len(blob_files(archive)) == 1
    assert count(archive, Change) == 1


def _changed_copy(tmp_path: Path, path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one pixel differs
    changed = tmp_path / "changed.dcm"
    changed.write_bytes(bytes(data))
    return changed


def test_different_bytes_keep_the_first_copy_by_default(
    archive: Archive, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = factories.write(factories.image(), tmp_path / "src")
    put(archive, path)
    (first,) = list(archive.iter_instances())
    with caplog.at_level(logging.WARNING, logger="storage"):
        assert put(archive, _changed_copy(tmp_path, path)) is Outcome.KEPT_FIRST
    (kept,) = list(archive.iter_instances())
    assert kept.sha256 == first.sha256
    assert blob_files(archive) == [first.blob_key]
    assert "the first copy is kept" in caplog.text


def test_different_bytes_replace_the_copy_when_set_to_overwrite(
    storage_settings: StorageSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage_settings.duplicate_policy = DuplicatePolicy.OVERWRITE
    with Archive.open(storage_settings) as archive:
        path = factories.write(factories.image(), tmp_path / "src")
        put(archive, path)
        changed = _changed_copy(tmp_path, path)
        with caplog.at_level(logging.WARNING, logger="storage"):
            assert put(archive, changed) is Outcome.OVERWRITTEN
        (stored,) = list(archive.iter_instances())
        assert stored.sha256 == hashlib.sha256(changed.read_bytes()).hexdigest()
        assert blob_files(archive) == [stored.blob_key]
        assert "it replaced the stored copy" in caplog.text


def test_a_series_cannot_move_to_another_study(archive: Archive, tmp_path: Path) -> None:
    first = factories.image()
    put(archive, factories.write(first, tmp_path / "src"))
    intruder = factories.image(series_uid=first.SeriesInstanceUID)
    with pytest.raises(InconsistentInstance, match="already belongs to another study"):
        put(archive, factories.write(intruder, tmp_path / "src"))
    assert count(archive, Instance) == 1
    assert len(blob_files(archive)) == 1


def test_a_refused_instance_leaves_no_file_behind(archive: Archive, tmp_path: Path) -> None:
    ds = factories.image()
    ds.PixelData = ds.PixelData[:10]
    path = factories.write(ds, tmp_path / "src")
    with pytest.raises(InconsistentInstance):
        put(archive, path)
    assert blob_files(archive) == []
    assert list(archive.staging_dir.iterdir()) == []


def test_a_full_store_refuses_with_out_of_resources(
    storage_settings: StorageSettings, tmp_path: Path
) -> None:
    storage_settings.min_free_mb = 10**9  # a petabyte of reserve: the disk is "full"
    with Archive.open(storage_settings) as archive:
        with pytest.raises(StorageUnavailable, match=r"disk full: .* PACS_MIN_FREE_MB"):
            put(archive, factories.write(factories.image(), tmp_path / "src"))
        assert blob_files(archive) == []
        assert list(archive.staging_dir.iterdir()) == []


def test_an_index_that_cannot_commit_refuses_and_leaves_no_blob(
    storage_settings: StorageSettings, tmp_path: Path
) -> None:
    """Another writer holds the index locked past our timeout: refused, nothing kept."""
    url = storage_settings.resolved_database_url
    engine = create_index_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    timeout = "PRAGMA busy_timeout=200" if sqlite else "SET lock_timeout = '200ms'"
    event.listen(engine, "connect", lambda conn, _: conn.cursor().execute(timeout))
    migrate(engine)
    blobs = open_blob_store(storage_settings)
    archive = Archive(engine=engine, blobs=blobs, settings=storage_settings)
    try:
        put(archive, factories.write(factories.image(), tmp_path / "src"))
        other = create_index_engine(url)
        with other.connect().execution_options(sqlite_begin="EXCLUSIVE") as locker:
            locker.begin()
            if not sqlite:
                locker.exec_driver_sql("LOCK TABLE instances IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StorageUnavailable, match=r"locked|lock timeout"):
                put(archive, factories.write(factories.image(), tmp_path / "src"))
            locker.rollback()
        other.dispose()
        assert len(blob_files(archive)) == 1
        assert put(archive, factories.write(factories.image(), tmp_path / "src")) is Outcome.STORED
    finally:
        archive.close()


def test_everything_survives_a_restart(storage_settings: StorageSettings, tmp_path: Path) -> None:
    paths = factories.write_all(factories.ct_series(5), tmp_path / "src")
    with Archive.open(storage_settings) as archive:
        for path in paths:
            put(archive, path)
    with Archive.open(storage_settings) as reopened:
        assert reopened.stats().instances == 5
        for stored in reopened.iter_instances():
            assert reopened.blob_matches(stored.blob_key, stored.sha256)


def test_stale_staging_files_are_cleaned_at_start(storage_settings: StorageSettings) -> None:
    with Archive.open(storage_settings) as archive:
        leftover = archive.staging_dir / "in-crashed.part"
        leftover.write_bytes(b"partial")
        os.utime(leftover, (1, 1))
        fresh = archive.staging_dir / "in-now.part"
        fresh.write_bytes(b"in flight")
    with Archive.open(storage_settings) as archive:
        assert not leftover.exists()
        assert fresh.exists()


def test_concurrent_stores_of_one_study_count_exactly(archive: Archive, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    paths = factories.write_all(factories.ct_series(40), tmp_path / "src")
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda p: put(archive, p), paths + paths))
    assert outcomes.count(Outcome.STORED) == 40
    assert outcomes.count(Outcome.ALREADY_PRESENT) == 40
    (study,) = archive.find(build_query(Level.STUDY, {}))
    assert study.values["NumberOfStudyRelatedInstances"] == 40
    assert study.values["NumberOfStudyRelatedSeries"] == 1
    assert len(blob_files(archive)) == 40


def test_a_file_without_its_preamble_is_stored_with_a_zeroed_one(
    archive: Archive, tmp_path: Path
) -> None:
    """Some writers start a file at its File Meta Information (no preamble, no DICM)."""
    path = factories.write(factories.image(), tmp_path / "src")
    bare = tmp_path / "no-preamble.dcm"
    bare.write_bytes(path.read_bytes()[132:])
    assert put(archive, bare) is Outcome.STORED
    (key,) = blob_files(archive)
    with archive.blobs.open(key) as blob:
        assert blob.read() == path.read_bytes()
