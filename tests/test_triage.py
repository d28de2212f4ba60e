"""AI triage end to end, through `pacs serve` as deployed: a chest radiograph sent by a
modality gets its SR in the same study once the study is quiet; a CT study is skipped with
its reason; a restart runs nothing twice."""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
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

from tests import factories
from tests.conftest import SCU_AET, associate, free_port
from tests.test_serve import Server

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


@pytest.fixture
def triage(tmp_path: Path) -> Iterator[Server]:
    settings = {"PACS_AI_ENABLED": "true", "PACS_AI_QUIET_SECONDS": "1", "COLUMNS": "300"}
    server = Server(tmp_path / "archive", free_port(), free_port(), settings=settings)
    registered = server.pacs(
        "remote", "add", "cr", "--aet", SCU_AET, "--host", "127.0.0.1", "--port", "104"
    )
    assert registered.returncode == 0, registered.stderr
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.stop()


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
        found = httpx.get(url, params={"Modality": "SR"}).json()
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
    jobs = triage.pacs("jobs")
    assert jobs.returncode == 0, jobs.stderr
    assert "FLAGGED" in jobs.stdout
    assert "no chest radiograph" in jobs.stdout  # the CT study, skipped with its reason

    report = httpx.get(
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
    assert "no chest radiograph" in jobs
    assert _sr_series(triage, knee.StudyInstanceUID, timeout=1) == []
