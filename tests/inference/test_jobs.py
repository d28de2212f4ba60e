"""Inference jobs: made once per quiet study, taken over from a worker killed mid-job, and
one result however often a job runs."""

import socket
from datetime import timedelta
from pathlib import Path

from inference.bundles import load
from inference.config import SHIPPED_MODELS
from inference.jobs import claim_next, queue_quiet_studies
from inference.service import InferenceService
from storage import Archive, Level, Source, build_query, stage_file
from tests import factories
from tests.test_triage import chest_cr

MODEL, VERSION = "cxr-pneumonia", "1.0.0"


def _store(archive: Archive, tmp_path: Path) -> str:
    cr = chest_cr("pneumonia-person1008_bacteria_2939.jpeg")
    path = factories.write(cr, tmp_path / "src")
    archive.store(stage_file(path, archive.staging_dir), source=Source("dimse", aet="CR1"))
    return str(cr.StudyInstanceUID)


def test_a_quiet_study_gets_one_job_however_often_it_is_noticed(
    archive: Archive, tmp_path: Path
) -> None:
    _store(archive, tmp_path)
    assert queue_quiet_studies(archive, MODEL, VERSION, timedelta(0)) == 1
    assert queue_quiet_studies(archive, MODEL, VERSION, timedelta(0)) == 0
    assert queue_quiet_studies(archive, MODEL, VERSION, timedelta(hours=1)) == 0


def test_a_job_of_a_worker_killed_on_this_host_is_taken_over_at_once(
    archive: Archive, tmp_path: Path
) -> None:
    _store(archive, tmp_path)
    queue_quiet_studies(archive, MODEL, VERSION, timedelta(0))
    first = claim_next(archive, MODEL, f"{socket.gethostname()}:999999999")  # since killed
    assert first is not None
    again = claim_next(archive, MODEL, f"{socket.gethostname()}:1")
    assert again is not None
    assert again.id == first.id


def test_a_job_of_a_worker_elsewhere_waits_for_its_lease(archive: Archive, tmp_path: Path) -> None:
    _store(archive, tmp_path)
    queue_quiet_studies(archive, MODEL, VERSION, timedelta(0))
    assert claim_next(archive, MODEL, "other-node:1234") is not None
    assert claim_next(archive, MODEL, f"{socket.gethostname()}:1") is None  # it may be alive


def test_a_job_run_twice_leaves_one_result(archive: Archive, tmp_path: Path) -> None:
    study = _store(archive, tmp_path)
    queue_quiet_studies(archive, MODEL, VERSION, timedelta(0))
    job = claim_next(archive, MODEL, "node:1")
    assert job is not None
    service = InferenceService(archive, SHIPPED_MODELS, quiet_seconds=0)
    service._model = load(SHIPPED_MODELS / MODEL)
    first = service._triage(job)
    second = service._triage(job)  # as after a kill between the store and the state write
    assert first.result == second.result
    assert first.flagged is True
    reports = archive.find(
        build_query(
            Level.IMAGE, {"StudyInstanceUID": study, "SOPClassUID": "1.2.840.10008.5.1.4.1.1.88.34"}
        )
    )
    assert len(reports) == 1
