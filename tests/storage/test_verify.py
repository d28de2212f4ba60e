"""Verification finds what went missing, what rotted and what no row points at."""

from datetime import timedelta
from pathlib import Path

from storage import Archive, Source, stage_file
from storage.verify import Problem, verify
from tests import factories
from tests.conftest import overwrite_blob

SOURCE = Source("import", aet=None)


def _stored(archive: Archive, tmp_path: Path, count: int) -> None:
    for index, dataset in enumerate(factories.ct_series(count)):
        path = factories.write(dataset, tmp_path / "src", f"{index}.dcm")
        archive.store(stage_file(path, archive.staging_dir), source=SOURCE)


def test_an_intact_archive_verifies_clean(archive: Archive, tmp_path: Path) -> None:
    _stored(archive, tmp_path, 3)
    report = verify(archive)
    assert (report.instances, report.checked, report.blobs) == (3, 3, 3)
    assert report.findings == []


def test_missing_corrupt_and_orphan_blobs_are_listed(archive: Archive, tmp_path: Path) -> None:
    _stored(archive, tmp_path, 4)
    first, second, *_ = list(archive.iter_instances())
    archive.blobs.delete(first.blob_key)
    overwrite_blob(archive, second.blob_key, b"bit rot")
    overwrite_blob(archive, "f" * 32, b"left by a crash before the index row")

    report = verify(archive)
    found = {(f.problem, f.blob_key) for f in report.findings}
    assert found == {
        (Problem.MISSING, first.blob_key),
        (Problem.CORRUPT, second.blob_key),
        (Problem.ORPHAN, "f" * 32),
    }
    missing = next(f for f in report.findings if f.problem is Problem.MISSING)
    assert missing.instance is not None
    assert missing.instance.sop_instance_uid == first.sop_instance_uid


def test_a_sample_re_reads_only_part_of_the_blobs(archive: Archive, tmp_path: Path) -> None:
    _stored(archive, tmp_path, 10)
    report = verify(archive, sample=0.3, orphans=False, seed=7)
    assert report.instances == 10
    assert 0 < report.checked < 10
    assert report.blobs == 0


def test_repair_removes_old_orphans_and_keeps_young_ones_and_indexed_blobs(
    archive: Archive, tmp_path: Path
) -> None:
    _stored(archive, tmp_path, 2)
    overwrite_blob(archive, "e" * 32, b"left by a node killed before its index commit")

    young = verify(archive, remove_orphans_older_than=timedelta(hours=1))
    assert [(f.problem, f.removed) for f in young.findings] == [(Problem.ORPHAN, False)]
    assert archive.blobs.size("e" * 32) is not None  # may still be on its way into the index

    old = verify(archive, remove_orphans_older_than=timedelta(0))
    assert [(f.problem, f.blob_key, f.removed) for f in old.findings] == [
        (Problem.ORPHAN, "e" * 32, True)
    ]
    assert archive.blobs.size("e" * 32) is None
    again = verify(archive)
    assert (again.instances, again.blobs, again.findings) == (2, 2, [])
