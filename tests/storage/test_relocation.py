"""Moving an archive between backends: everything arrives, checked, and a second run resumes."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import Archive, Level, PeerRegistry, Source, StorageSettings, build_query, stage_file
from storage.relocation import relocate
from storage.verify import verify
from tests import factories
from tests.conftest import audit_row, blob_bytes, overwrite_blob

SOURCE = Source("dimse", aet="CT1", address="10.0.0.5", hospital="BVDKLD")


@pytest.fixture
def target(
    request: pytest.FixtureRequest, storage_settings: StorageSettings, tmp_path: Path
) -> Iterator[Archive]:
    """The other kind of backend: the embedded one moves to PostgreSQL + S3, and back."""
    if storage_settings.database_url is None:
        settings = StorageSettings(
            data_dir=tmp_path / "target",
            database_url=request.getfixturevalue("postgres_url"),
            blob_url=request.getfixturevalue("s3_url"),
            min_free_mb=0,
            _env_file=None,
        )
    else:
        settings = StorageSettings(data_dir=tmp_path / "target", min_free_mb=0, _env_file=None)
    archive = Archive.open(settings)
    yield archive
    archive.close()


def _store(archive: Archive, folder: Path, count: int, **patient: str) -> None:
    for index, ds in enumerate(factories.ct_series(count, **patient)):
        path = factories.write(ds, folder, f"{index}.dcm")
        archive.store(stage_file(path, archive.staging_dir), source=SOURCE)


def test_an_archive_moves_whole_and_keeps_working(
    archive: Archive, target: Archive, tmp_path: Path
) -> None:
    _store(archive, tmp_path / "a", 3, name="Nguyễn^Thị Hằng", patient_id="P1")
    _store(archive, tmp_path / "b", 2, name="Trần^Văn Minh", patient_id="P2")
    PeerRegistry(archive.engine).add(name="ct1", aet="CT1", host="10.0.0.5", port=104)
    archive.audit(action="query", actor="RIS", outcome="success")
    audit_row(archive, action="query")  # committed (rows nobody waits for linger a little)

    report = relocate(archive, target)

    assert report.complete
    assert (report.blobs_copied, report.blobs_present) == (5, 0)
    assert report.counts["instances"] == (5, 5)
    assert report.counts["remote_nodes"] == (1, 1)
    assert target.stats() == archive.stats()
    (study,) = target.find(build_query(Level.STUDY, {"PatientName": "NGUYEN*"}))
    assert study.values["NumberOfStudyRelatedInstances"] == 3
    for instance in archive.iter_instances():
        assert blob_bytes(target, instance.blob_key) == blob_bytes(archive, instance.blob_key)
    assert verify(target).findings == []
    assert PeerRegistry(target.engine).by_aet("CT1") is not None
    # New rows get keys after the moved ones.
    _store(target, tmp_path / "c", 2, patient_id="P3")
    assert target.stats().instances == 7


def test_a_second_run_moves_only_what_is_new(
    archive: Archive, target: Archive, tmp_path: Path
) -> None:
    series = factories.ct_series(5)
    paths = [factories.write(ds, tmp_path / "a", f"{i}.dcm") for i, ds in enumerate(series)]
    for path in paths[:3]:
        archive.store(stage_file(path, archive.staging_dir), source=SOURCE)
    relocate(archive, target)
    for path in paths[3:]:  # two more of the same study arrive after the first run
        archive.store(stage_file(path, archive.staging_dir), source=SOURCE)

    report = relocate(archive, target)

    assert report.complete
    assert (report.blobs_copied, report.blobs_present) == (2, 3)
    assert report.rows_copied["instances"] == 2
    assert target.stats() == archive.stats()
    (study,) = target.find(build_query(Level.STUDY, {}))
    assert study.values["NumberOfStudyRelatedInstances"] == 5  # the study row caught up


def test_a_damaged_blob_is_left_behind_and_reported(
    archive: Archive, target: Archive, tmp_path: Path
) -> None:
    _store(archive, tmp_path / "a", 3)
    damaged = next(archive.iter_instances())
    overwrite_blob(archive, damaged.blob_key, b"not what arrived")

    report = relocate(archive, target)

    assert not report.complete
    ((instance, reason),) = report.unreadable
    assert instance.sop_instance_uid == damaged.sop_instance_uid
    assert "differ from the SHA-256 recorded at arrival" in reason
    assert report.counts["instances"] == (3, 2)
    assert target.blobs.size(damaged.blob_key) is None
    assert verify(target).findings == []  # no row without its blob
