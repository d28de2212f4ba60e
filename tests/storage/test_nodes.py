"""Several archive nodes on one index and one blob store: one row and one blob per instance."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from storage import Archive, Level, Outcome, Source, StorageSettings, build_query, stage_file
from storage.verify import verify
from tests import factories


@pytest.fixture
def two_nodes(storage_settings: StorageSettings) -> Iterator[tuple[Archive, Archive]]:
    first = Archive.open(storage_settings)
    second = Archive.open(storage_settings)
    yield first, second
    first.close()
    second.close()


def test_the_same_study_sent_to_two_nodes_at_once_is_stored_once(
    two_nodes: tuple[Archive, Archive], tmp_path: Path
) -> None:
    series = [
        factories.write(ds, tmp_path / "src", f"{i}.dcm")
        for i, ds in enumerate(factories.ct_series(12, name="Lê^Thị Mai", patient_id="P777"))
    ]
    others = [factories.write(factories.image(), tmp_path / "other") for _ in range(4)]

    def send(node: Archive, name: str, paths: list[Path]) -> list[Outcome]:
        source = Source("dimse", aet=name, hospital="BVDKLD")
        return [
            node.store(stage_file(path, node.staging_dir), source=source).outcome for path in paths
        ]

    first, second = two_nodes
    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = [
            pool.submit(send, first, "CT1", series),
            pool.submit(send, second, "CT1", series),
            pool.submit(send, first, "CT2", others[:2]),
            pool.submit(send, second, "CT3", others[2:]),
        ]
        outcomes = [outcome for job in jobs for outcome in job.result()]

    assert outcomes.count(Outcome.STORED) == 12 + 4
    assert outcomes.count(Outcome.ALREADY_PRESENT) == 12
    for node in two_nodes:  # every node sees everything, counts included
        assert node.stats().instances == 16
        (study,) = node.find(build_query(Level.STUDY, {"PatientName": "LE^THI*"}))
        assert study.values["NumberOfStudyRelatedInstances"] == 12
        assert study.values["NumberOfStudyRelatedSeries"] == 1
    report = verify(first)
    assert (report.instances, report.blobs, report.findings) == (16, 16, [])
