"""DCMTK's clients (Debian package dcmtk) as independent peers of every service."""

import os
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_node.node import DicomNode
from storage import Archive, PeerRegistry
from tests import factories
from tests.conftest import SCU_AET, free_port, need

ENV = {**os.environ, "TCP_NODELAY": "1"}


def run(tool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need(tool), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
        cwd=cwd,
        check=False,
    )


def dcmtk(
    node: DicomNode,
    tool: str,
    *args: str,
    aet: str = SCU_AET,
    cwd: Path | None = None,
    files: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    return run(
        tool, "-aet", aet, "-aec", "DALAT", *args, "127.0.0.1", str(node.port), *files, cwd=cwd
    )


@pytest.fixture
def sent(node: DicomNode, tmp_path: Path) -> list[Path]:
    datasets = [*factories.ct_series(3), factories.chest_cr()]
    datasets[3].StudyInstanceUID = datasets[0].StudyInstanceUID
    folder = tmp_path / "sent"
    paths = factories.write_all(datasets, folder)
    result = dcmtk(node, "storescu", "+sd", files=(str(folder),))
    assert result.returncode == 0, result.stderr
    return paths


def by_uid(paths: list[Path]) -> dict[str, bytes]:
    return {
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): factories.after_meta(p)
        for p in paths
    }


def test_echoscu(node: DicomNode) -> None:
    assert dcmtk(node, "echoscu").returncode == 0
    refused = dcmtk(node, "echoscu", aet="INTRUDER")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr + refused.stdout


def test_storescu_stores_what_it_sends(node: DicomNode, archive: Archive, sent: list[Path]) -> None:
    assert archive.stats().instances == 4
    stored = {i.sop_instance_uid: i.blob_key for i in archive.iter_instances()}
    for uid, data in by_uid(sent).items():
        with archive.blob_file(stored[uid]) as path:
            assert factories.after_meta(path) == data


def test_findscu_finds_vietnamese_names(node: DicomNode, sent: list[Path], tmp_path: Path) -> None:
    result = dcmtk(
        node,
        "findscu",
        "-S",
        "-X",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "SpecificCharacterSet=ISO_IR 192",
        "-k",
        "PatientName=Nguyễn*",
        "-k",
        "StudyInstanceUID",
        "-k",
        "ModalitiesInStudy",
        "-k",
        "NumberOfStudyRelatedInstances",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (response,) = [dcmread(p) for p in sorted(tmp_path.glob("rsp*.dcm"))]
    assert str(response.PatientName) == "Nguyễn^Thị Hằng"
    assert response.SpecificCharacterSet == "ISO_IR 192"
    assert response.ModalitiesInStudy == ["CR", "CT"]
    assert response.NumberOfStudyRelatedInstances == 4


def test_findscu_without_diacritics(node: DicomNode, tmp_path: Path) -> None:
    other = factories.write(
        factories.chest_cr(name="Trần^Văn Minh", patient_id="P002"), tmp_path / "in"
    )
    assert dcmtk(node, "storescu", files=(str(other),)).returncode == 0
    result = dcmtk(
        node,
        "findscu",
        "-P",
        "-X",
        "-k",
        "QueryRetrieveLevel=PATIENT",
        "-k",
        "PatientName=TRAN*",
        "-k",
        "PatientID",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (response,) = [dcmread(p) for p in sorted(tmp_path.glob("rsp*.dcm"))]
    assert str(response.PatientName) == "Trần^Văn Minh"


def _study_uid(paths: list[Path]) -> str:
    return str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)


def test_movescu_receives_the_study_byte_for_byte(
    node: DicomNode, peers: PeerRegistry, sent: list[Path], tmp_path: Path
) -> None:
    port = free_port()
    peers.add(name="movescu", aet="MOVESCU", host="127.0.0.1", port=port)
    out = tmp_path / "moved"
    out.mkdir()
    result = dcmtk(
        node,
        "movescu",
        "-S",
        "-aem",
        "MOVESCU",
        "+P",
        str(port),
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={_study_uid(sent)}",
        aet="MOVESCU",
    )
    assert result.returncode == 0, result.stderr
    assert by_uid(list(out.iterdir())) == by_uid(sent)


def test_movescu_to_an_unknown_destination(node: DicomNode, sent: list[Path]) -> None:
    result = dcmtk(
        node,
        "movescu",
        "-S",
        "-aem",
        "NOBODY",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={_study_uid(sent)}",
    )
    assert "Refused: MoveDestinationUnknown" in result.stdout + result.stderr


def test_getscu_receives_the_study_byte_for_byte(
    node: DicomNode, sent: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk(
        node,
        "getscu",
        "-S",
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={_study_uid(sent)}",
    )
    assert result.returncode == 0, result.stderr
    assert by_uid(list(out.iterdir())) == by_uid(sent)


def test_storescu_refusals_are_reported_per_file(
    node: DicomNode, archive: Archive, tmp_path: Path
) -> None:
    good = factories.write(factories.image(), tmp_path / "in", "1-good.dcm")
    bad_ds: Dataset = factories.image(rows=64, columns=64)
    bad_ds.PixelData = bad_ds.PixelData[:100]
    factories.write(bad_ds, tmp_path / "in", "2-bad.dcm")
    result = dcmtk(node, "storescu", "+sd", "-v", files=(str(tmp_path / "in"),))
    output = result.stdout + result.stderr
    assert "Error: DataSetDoesNotMatchSOPClass" in output
    assert archive.stats().instances == 1
    assert good.exists()
