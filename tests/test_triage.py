"""AI triage end to end, through `pacs serve` as deployed: a chest radiograph sent by a
modality gets its SR in the same study once the study is quiet; a CT study is skipped with
its reason; a restart runs nothing twice."""

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as StudyRootFind

from tests import factories
from tests.auth import http
from tests.conftest import SCU_AET, associate, free_port
from tests.servers import Server

GOLDEN = Path(__file__).parent / "data" / "cxr-golden"


def chest_cr(jpeg: str) -> Dataset:
    """A golden training image as a modality would send it: a CR, MONOCHROME1."""
    pixels = np.asarray(Image.open(GOLDEN / jpeg).convert("L"), dtype=np.uint8)
    ds = factories.image(sop_class=ComputedRadiographyImageStorage, modality="CR")
    ds.BodyPartExamined = "CHEST"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PixelData = (255 - pixels).tobytes()
    for name in ("ImagePositionPatient", "ImageOrientationPatient"):
        delattr(ds, name)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def ai_server(tmp_path: Path, **settings: str) -> Server:
    """`pacs serve` (not started) with AI triage on, a quiet period of 1 s, more settings
    given, and the tests' SCU registered as a modality."""
    env = {"PACS_AI_ENABLED": "true", "PACS_AI_QUIET_SECONDS": "1", "COLUMNS": "300"}
    server = Server(tmp_path / "archive", free_port(), free_port(), settings=env | settings)
    registered = server.pacs(
        "remote", "add", "modality", "--aet", SCU_AET, "--host", "127.0.0.1", "--port", "104"
    )
    assert registered.returncode == 0, registered.stderr
    return server


def stop(server: Server) -> None:
    if server.process is not None and server.process.poll() is None:
        server.stop()


@pytest.fixture
def triage(tmp_path: Path) -> Iterator[Server]:
    server = ai_server(tmp_path)
    server.start()
    yield server
    stop(server)


def _send(port: int, datasets: list[Dataset], folder: Path) -> None:
    assoc = associate(port, ComputedRadiographyImageStorage, CTImageStorage)
    try:
        for path in factories.write_all(datasets, folder):
            assert int(assoc.send_c_store(path).Status) == 0
    finally:
        assoc.release()


def _sr_series(server: Server, study: str, timeout: float = 60) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{server.http_port}/dicom-web/studies/{study}/series"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = http.get(url, params={"Modality": "SR"}).json()
        if found:
            return list(found)
        time.sleep(0.5)
    return []


def test_a_chest_radiograph_gets_its_report_and_a_ct_is_skipped(
    triage: Server, tmp_path: Path
) -> None:
    cr = chest_cr("pneumonia-person1008_bacteria_2939.jpeg")  # the model flags this one
    ct = factories.ct_series(3)
    sent = time.monotonic()
    _send(triage.dicom_port, [cr, *ct], tmp_path / "sent")

    (sr,) = _sr_series(triage, cr.StudyInstanceUID)
    waited = time.monotonic() - sent
    assert waited < 1 + 15  # the quiet period and a few seconds
    assert "not a diagnosis" in sr["0008103E"]["Value"][0]
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = cr.StudyInstanceUID
    query.Modality = "SR"
    query.SeriesInstanceUID = query.SeriesDescription = ""
    assoc = associate(triage.dicom_port, StudyRootFind)
    try:
        found = [
            identifier
            for status, identifier in assoc.send_c_find(query, StudyRootFind)
            if status and status.Status in (0xFF00, 0xFF01)
        ]
    finally:
        assoc.release()
    assert [f.SeriesInstanceUID for f in found] == [sr["0020000E"]["Value"][0]]
    jobs = triage.pacs("jobs")
    assert jobs.returncode == 0, jobs.stderr
    assert "FLAGGED" in jobs.stdout
    assert "modality CT is not CR or DX" in jobs.stdout  # the CT study, skipped, and why

    api = f"http://127.0.0.1:{triage.http_port}/api/ai/jobs"
    (job,) = http.get(api, params={"study": cr.StudyInstanceUID}).json()
    assert job["state"] == "done"
    assert job["flagged"] is True
    assert job["severity"] == "urgent"
    assert job["finding"] == "pneumonia pattern"
    assert job["model"] == "cxr-pneumonia"
    assert job["series_instance_uid"] == cr.SeriesInstanceUID
    (stored,) = http.get(
        f"http://127.0.0.1:{triage.http_port}/dicom-web/studies/{cr.StudyInstanceUID}"
        f"/series/{sr['0020000E']['Value'][0]}/instances"
    ).json()
    assert job["result_sop_instance_uid"] == stored["00080018"]["Value"][0]
    (skipped,) = http.get(api, params={"study": ct[0].StudyInstanceUID}).json()
    assert skipped["state"] == "skipped"
    assert skipped["reason"].startswith("no series for cxr-pneumonia: series")
    assert http.get(api, params={"study": "not a uid"}).status_code == 400

    report = http.get(
        f"http://127.0.0.1:{triage.http_port}/dicom-web/studies/{cr.StudyInstanceUID}"
        f"/series/{sr['0020000E']['Value'][0]}/metadata"
    ).json()[0]
    text = str(report)
    assert "Pneumonia pattern score" in text
    assert "cxr-pneumonia" in text

    triage.stop()  # a restart runs nothing again: one result per study and model version
    triage.start()
    time.sleep(4)
    assert len(_sr_series(triage, cr.StudyInstanceUID, timeout=1)) == 1
    again = triage.pacs("jobs")
    assert again.stdout.count("done") == jobs.stdout.count("done")


def test_a_knee_radiograph_is_skipped_with_its_reason(triage: Server) -> None:
    """Routing reads the index, not file names: a CR of the knee is skipped."""
    knee = chest_cr("normal-IM-0125-0001.jpeg")
    knee.BodyPartExamined = "KNEE"
    knee.StudyInstanceUID = generate_uid()
    _send(triage.dicom_port, [knee], Path(triage.data_dir.parent / "knee"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        jobs = triage.pacs("jobs").stdout
        if "skipped" in jobs:
            break
        time.sleep(0.5)
    assert "body part KNEE is not CHEST" in jobs
    assert _sr_series(triage, knee.StudyInstanceUID, timeout=1) == []


def test_pacs_serve_killed_mid_job_runs_it_again_after_restart_with_one_result(
    tmp_path: Path,
) -> None:
    from tests.inference.misbehaving import make_bundle

    models = tmp_path / "models"
    make_bundle(models, "slow", seconds=6)
    server = ai_server(
        tmp_path,
        PACS_MODELS_DIR=str(models),
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),  # the test bundle's network
    )
    server.start()
    api = f"http://127.0.0.1:{server.http_port}/api/ai/jobs"
    cr = chest_cr("normal-IM-0143-0001.jpeg")
    try:
        _send(server.dicom_port, [cr], tmp_path / "sent")
        deadline = time.monotonic() + 60
        while http.get(api, params={"state": "running"}).json() == []:
            assert time.monotonic() < deadline, http.get(api).json()
            time.sleep(0.2)
        server.stop(signal.SIGKILL)
        server.start()
        deadline = time.monotonic() + 60
        while (job := http.get(api).json()[0])["state"] != "done":
            assert time.monotonic() < deadline, job
            time.sleep(0.3)
        assert job["attempts"] == 2
        assert len(_sr_series(server, cr.StudyInstanceUID, timeout=1)) == 1
    finally:
        stop(server)


def test_head_ct_phantoms_end_to_end_a_bleed_is_flagged_with_its_segmentation(
    tmp_path: Path,
) -> None:
    """The experimental head-CT model, turned on for the site: a normal head phantom is
    read and not flagged; one with a 65 HU sphere is flagged, with a SEG in the study."""
    from pydicom import dcmread

    from tests.inference.phantoms import Bleed, head_ct

    server = ai_server(tmp_path)
    enabled = server.pacs("model", "set", "blast-ct", "--hospital", "*", "--enable")
    assert enabled.returncode == 0, enabled.stderr
    normal, bleeding = head_ct(), head_ct(bleed=Bleed())
    server.start()
    try:
        _send(server.dicom_port, [*normal, *bleeding], tmp_path / "sent")
        api = f"http://127.0.0.1:{server.http_port}/api/ai/jobs"
        deadline = time.monotonic() + 120
        while True:
            jobs = http.get(api, params={"model": "blast-ct", "state": "done"}).json()
            if len(jobs) == 2:
                break
            assert time.monotonic() < deadline, http.get(api).json()
            time.sleep(0.5)
        by_study = {job["study_instance_uid"]: job for job in jobs}
        calm, bleed = by_study[normal[0].StudyInstanceUID], by_study[bleeding[0].StudyInstanceUID]
        assert calm["flagged"] is False
        assert calm["score"] < 1.0
        assert bleed["flagged"] is True
        assert bleed["severity"] == "critical"
        assert bleed["finding"] == "intracranial haemorrhage"
        assert 2.0 < bleed["score"] < 8.0  # mL; the sphere holds 4.2 mL
        assert bleed["series_instance_uid"] == bleeding[0].SeriesInstanceUID

        base = f"http://127.0.0.1:{server.http_port}/dicom-web/studies"
        assert http.get(
            f"{base}/{normal[0].StudyInstanceUID}/series", params={"Modality": "SEG"}
        ).json() in ([], None)
        (seg,) = http.get(
            f"{base}/{bleeding[0].StudyInstanceUID}/series", params={"Modality": "SEG"}
        ).json()
        assert seg["0008103E"]["Value"][0].startswith("AI triage, not a diagnosis")
        seg_uid = seg["0020000E"]["Value"][0]
        body = http.get(
            f"{base}/{bleeding[0].StudyInstanceUID}/series/{seg_uid}",
            headers={"Accept": 'multipart/related; type="application/dicom"'},
        )
        assert body.status_code == 200
        part = body.content.split(b"\r\n\r\n", 1)[1]
        path = tmp_path / "seg.dcm"
        path.write_bytes(part[: part.rindex(b"\r\n--")])
        segmentation = dcmread(path)
        assert segmentation.Modality == "SEG"
        referenced = {
            item.ReferencedSOPInstanceUID
            for item in segmentation.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        }
        assert referenced <= {str(ds.SOPInstanceUID) for ds in bleeding}
        assert segmentation.PatientName == "Nguyễn^Thị Hà"
    finally:
        server.stop()
