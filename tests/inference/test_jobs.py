"""Inference jobs: made once per quiet study, taken over from a worker killed mid-job, and
one result however often a job runs; a model that hangs or crashes fails its job only."""

import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from inference.config import SHIPPED_MODELS
from inference.jobs import Job, claim_next, queue_quiet_studies
from inference.model_settings import set_choice
from inference.routing import read
from inference.runner import ModelPool
from inference.service import Triage, available_models
from storage import Archive, Level, Source, build_query, stage_file
from storage.ai_jobs import list_jobs
from tests import factories
from tests.inference.misbehaving import make_bundle
from tests.test_triage import chest_cr

MODEL, VERSION = "cxr-pneumonia", "1.0.0"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def _store(archive: Archive, tmp_path: Path, hospital: str | None = None) -> str:
    cr = chest_cr("pneumonia-person1008_bacteria_2939.jpeg")
    path = factories.write(cr, tmp_path / "src" / str(cr.SOPInstanceUID))
    archive.store(
        stage_file(path, archive.staging_dir),
        source=Source("dimse", aet="CR1", hospital=hospital),
    )
    return str(cr.StudyInstanceUID)


def _claim(archive: Archive, model: str = MODEL) -> Job:
    job = claim_next(archive, [model], "node:1")
    assert job is not None
    return job


@pytest.fixture
def pool() -> Iterator[ModelPool]:
    pool = ModelPool(workers=1, timeout=20)
    yield pool
    pool.close()


def _triage(archive: Archive, pool: ModelPool, models_dir: Path = SHIPPED_MODELS) -> Triage:
    models = available_models(models_dir)
    routing = read(models_dir / "routing.toml")
    return Triage(archive, models, routing, pool, ensemble=1, owner="node:1")


def test_a_quiet_study_gets_one_job_however_often_it_is_noticed(
    archive: Archive, tmp_path: Path
) -> None:
    _store(archive, tmp_path)
    assert len(queue_quiet_studies(archive, MODEL, VERSION, timedelta(0))) == 1
    assert queue_quiet_studies(archive, MODEL, VERSION, timedelta(0)) == []
    assert queue_quiet_studies(archive, MODEL, VERSION, timedelta(hours=1)) == []


def test_a_job_of_a_worker_killed_on_this_host_is_taken_over_at_once(
    archive: Archive, tmp_path: Path
) -> None:
    _store(archive, tmp_path)
    queue_quiet_studies(archive, MODEL, VERSION, timedelta(0))
    first = claim_next(archive, [MODEL], f"{socket.gethostname()}:999999999")  # since killed
    assert first is not None
    again = claim_next(archive, [MODEL], f"{socket.gethostname()}:1")
    assert again is not None
    assert again.id == first.id
    assert again.attempts == 2


def test_a_job_of_a_worker_elsewhere_waits_for_its_lease(archive: Archive, tmp_path: Path) -> None:
    _store(archive, tmp_path)
    queue_quiet_studies(archive, MODEL, VERSION, timedelta(0))
    assert claim_next(archive, [MODEL], "other-node:1234") is not None
    assert claim_next(archive, [MODEL], f"{socket.gethostname()}:1") is None  # it may be alive


def test_a_job_run_twice_leaves_one_result(
    archive: Archive, pool: ModelPool, tmp_path: Path
) -> None:
    study = _store(archive, tmp_path, hospital="BVDKLD")
    queue_quiet_studies(archive, MODEL, VERSION, timedelta(0))
    job = _claim(archive)
    triage = _triage(archive, pool)
    triage.run(job)
    triage.run(job)  # as after a kill between the store and the state write
    reports = archive.find(
        build_query(Level.IMAGE, {"StudyInstanceUID": study, "SOPClassUID": COMPREHENSIVE_3D_SR})
    )
    assert len(reports) == 1
    assert archive.stats().patients == 1  # the report is kept with the study's own patient
    (done,) = list_jobs(archive, study=study)
    assert done["state"] == "done"
    assert done["flagged"] is True
    assert done["severity"] == "urgent"
    assert done["hospital"] == "BVDKLD"
    assert done["finding"] == "pneumonia pattern"
    assert done["result_sop_instance_uid"] == reports[0].values["SOPInstanceUID"]
    assert done["weights_sha256"].startswith("53dc9e82")


def test_a_hospital_that_turned_a_model_off_gets_no_run_and_its_own_threshold_applies(
    archive: Archive, pool: ModelPool, tmp_path: Path
) -> None:
    off = _store(archive, tmp_path, hospital="TTYT-DONDUONG")
    strict = _store(archive, tmp_path, hospital="BVDKLD")
    set_choice(archive, MODEL, "TTYT-DONDUONG", by="admin", enabled=False)
    set_choice(archive, MODEL, "BVDKLD", by="admin", threshold=0.99999, evidence="local study")
    queue_quiet_studies(archive, MODEL, VERSION, timedelta(0))
    triage = _triage(archive, pool)
    triage.run(_claim(archive))
    triage.run(_claim(archive))
    (skipped,) = list_jobs(archive, study=off)
    assert skipped["state"] == "skipped"
    assert skipped["reason"] == "cxr-pneumonia is off for hospital TTYT-DONDUONG"
    (done,) = list_jobs(archive, study=strict)
    assert done["threshold"] == 0.99999
    assert done["flagged"] is False  # 0.999978 is under this hospital's threshold


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("hang", "no result within 3 s; the model's process was stopped"),
        ("crash", "the model's process died during the run (exit code -9)"),
    ],
)
def test_a_model_that_hangs_or_crashes_fails_that_job_and_the_next_goes_on(
    archive: Archive, tmp_path: Path, mode: str, reason: str
) -> None:
    models = tmp_path / "models"
    make_bundle(models, "bad", mode=mode)
    make_bundle(models, "good")
    first = _store(archive, tmp_path)
    queue_quiet_studies(archive, "bad", "0.1.0", timedelta(0))
    queue_quiet_studies(archive, "good", "0.1.0", timedelta(0))
    pool = ModelPool(workers=1, timeout=3)
    try:
        triage = _triage(archive, pool, models)
        triage.run(_claim(archive, "bad"))
        triage.run(_claim(archive, "good"))
    finally:
        pool.close()
    jobs = {job["model"]: job for job in list_jobs(archive, study=first)}
    assert jobs["bad"]["state"] == "failed"
    assert jobs["bad"]["reason"] == reason
    assert jobs["good"]["state"] == "done"
    assert jobs["good"]["flagged"] is True


def test_a_tampered_bundle_is_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    models = tmp_path / "models"
    make_bundle(models, "good")
    bundle = make_bundle(models, "tampered")
    weights = bundle / "models" / "model.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert sorted(available_models(models)) == ["good"]
    assert "tampered 0.1.0: the SHA-256 of models/model.pt is" in caplog.text


@pytest.mark.parametrize("after", [0.2, 3.0], ids=["before-it-starts", "mid-run"])
def test_a_run_broken_off_by_a_stopping_worker_gives_its_job_back_unfailed(
    archive: Archive, tmp_path: Path, after: float
) -> None:
    import threading
    import time

    models = tmp_path / "models"
    make_bundle(models, "slow", seconds=60)
    study = _store(archive, tmp_path)
    queue_quiet_studies(archive, "slow", "0.1.0", timedelta(0))
    pool = ModelPool(workers=1, timeout=120)
    triage = _triage(archive, pool, models)
    running = threading.Thread(target=triage.run, args=(_claim(archive, "slow"),))
    running.start()
    time.sleep(after)
    triage.stopping.set()  # as InferenceService.stop and pacs worker do
    pool.close()
    running.join(30)
    (job,) = list_jobs(archive, study=study)
    assert job["state"] == "queued"  # another worker (or this one, restarted) runs it
    assert job["reason"] is None
    assert _claim(archive, "slow").attempts == 2


def test_a_worker_whose_job_was_taken_over_does_not_overwrite_its_result(
    archive: Archive, tmp_path: Path
) -> None:
    from inference.jobs import finish

    study = _store(archive, tmp_path)
    queue_quiet_studies(archive, MODEL, VERSION, timedelta(0))
    gone = claim_next(archive, [MODEL], f"{socket.gethostname()}:999999999")  # presumed dead
    assert gone is not None
    taker = claim_next(archive, [MODEL], f"{socket.gethostname()}:1")
    assert taker is not None
    assert finish(archive, taker, "done", score=0.9, flagged=True) is True
    assert finish(archive, gone, "failed", reason="late and wrong") is False
    (job,) = list_jobs(archive, study=study)
    assert (job["state"], job["flagged"], job["reason"]) == ("done", True, None)
