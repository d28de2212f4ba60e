"""C-STORE over real loopback associations (pynetdicom as the modality)."""

import logging
import struct
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicom_node.node import DicomNode
from storage import Archive, Level, build_query
from tests import factories
from tests.conftest import associate


def send(node: DicomNode, paths: list[Path]) -> list[int]:
    """Send files in one association (as their bytes), return the C-STORE statuses."""
    assoc = associate(node.port, CTImageStorage, MRImageStorage)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(path).Status) for path in paths]
    finally:
        assoc.release()


def test_store_then_find(node: DicomNode, archive: Archive, tmp_path: Path) -> None:
    paths = factories.write_all(factories.ct_series(3), tmp_path)
    assert send(node, paths) == [0, 0, 0]
    (study,) = archive.find(build_query(Level.STUDY, {"PatientName": "Nguyễn*"}))
    assert study.values["PatientName"] == "Nguyễn^Thị Hằng"
    assert study.values["NumberOfStudyRelatedInstances"] == 3


def test_stored_dataset_is_byte_identical_to_what_was_sent(
    node: DicomNode, archive: Archive, tmp_path: Path
) -> None:
    path = factories.write(factories.image(), tmp_path)
    assert send(node, [path]) == [0]
    (stored,) = archive.iter_instances()
    with archive.blob_file(stored.blob_key) as blob:
        assert factories.after_meta(blob) == factories.after_meta(path)
        assert blob.read_bytes()[:128] == b"\0" * 128


def test_the_sender_is_recorded_as_source_and_issuer(
    node: DicomNode, archive: Archive, tmp_path: Path
) -> None:
    send(node, [factories.write(factories.image(), tmp_path)])
    (stored,) = archive.iter_instances()
    from pydicom.filereader import read_file_meta_info

    with archive.blob_file(stored.blob_key) as blob:
        assert read_file_meta_info(blob).SourceApplicationEntityTitle == "TESTSCU"
    (patient,) = archive.find(build_query(Level.PATIENT, {}))
    assert patient.values["IssuerOfPatientID"] == "BVDKLD"  # the peer's hospital


def _bad_corpus(tmp_path: Path) -> dict[str, tuple[Path, int]]:
    """Bad files with the status each must get, keyed by what is wrong."""
    corpus: dict[str, tuple[Path, int]] = {}
    folder = tmp_path / "bad"

    truncated = factories.write(factories.image(rows=32, columns=32), folder, "truncated.dcm")
    truncated.write_bytes(truncated.read_bytes()[:-300])
    corpus["truncated pixel data"] = (truncated, 0xC000)

    no_uid = factories.image()
    del no_uid.StudyInstanceUID
    corpus["missing Study Instance UID"] = (factories.write(no_uid, folder, "no-uid.dcm"), 0xA900)

    lying = factories.write(factories.image(), folder, "lying.dcm")
    data = bytearray(lying.read_bytes())
    position = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data
    data[position + 8 : position + 12] = struct.pack("<I", 0x7FFFFFF0)
    lying.write_bytes(bytes(data))
    corpus["lying length"] = (lying, 0xC000)

    short = factories.image(rows=64, columns=64)
    short.PixelData = short.PixelData[:100]
    corpus["pixel data shorter than its rows"] = (
        factories.write(short, folder, "short.dcm"),
        0xA900,
    )

    wrong_class = factories.image()
    wrong_class.SOPClassUID = MRImageStorage  # the meta still says CT
    path = factories.write(wrong_class, folder, "wrong-class.dcm")
    raw = path.read_bytes().replace(
        MRImageStorage.encode() + b"\0", CTImageStorage.encode() + b"\0", 1
    )  # the File Meta Information (which the request follows) now says CT
    path.write_bytes(raw)
    corpus["dataset class differs from the request"] = (path, 0xA900)

    garbage = factories.write(factories.image(), folder, "garbage.dcm")
    head = garbage.read_bytes()[:300]
    garbage.write_bytes(head + bytes(range(256)) * 64)
    corpus["garbage after the meta"] = (garbage, 0xC000)
    return corpus


def test_bad_files_are_refused_and_good_ones_kept_in_one_association(
    node: DicomNode, archive: Archive, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = _bad_corpus(tmp_path)
    good = factories.write_all(factories.ct_series(2), tmp_path / "good")
    paths = [good[0], *(p for p, _ in corpus.values()), good[1]]
    with caplog.at_level(logging.WARNING, logger="dicom_node"):
        statuses = send(node, paths)
    expected = [0, *(status for _, status in corpus.values()), 0]
    assert [hex(s) for s in statuses] == [hex(s) for s in expected], list(corpus)
    assert archive.stats().instances == 2
    assert sorted(archive.blobs.keys()) == sorted(i.blob_key for i in archive.iter_instances())
    assert list(archive.staging_dir.iterdir()) == []
    assert caplog.text.count("Refused C-STORE") == len(corpus)
    assert "from TESTSCU (127.0.0.1)" in caplog.text
    assert send(node, [factories.write(factories.image(), tmp_path / "after")]) == [0]


def test_a_refusal_says_why_in_the_error_comment(node: DicomNode, tmp_path: Path) -> None:
    ds = factories.image(rows=64, columns=64)
    ds.PixelData = ds.PixelData[:100]
    assoc = associate(node.port, CTImageStorage)
    rsp = assoc.send_c_store(factories.write(ds, tmp_path))
    assoc.release()
    assert rsp.Status == 0xA900
    assert rsp.ErrorComment.startswith("pixel data has 100 bytes")


def test_a_full_disk_answers_out_of_resources(
    node: DicomNode, archive: Archive, tmp_path: Path
) -> None:
    archive.settings.min_free_mb = 10**9
    assoc = associate(node.port, CTImageStorage)
    rsp = assoc.send_c_store(factories.write(factories.image(), tmp_path))
    assoc.release()
    assert rsp.Status == 0xA700
    assert rsp.ErrorComment.startswith("disk full: ")
    assert "PACS_MIN_FREE_MB" in rsp.ErrorComment
    assert archive.stats().instances == 0


def test_unknown_sop_classes_are_refused_at_negotiation(node: DicomNode) -> None:
    private = "1.2.826.0.1.3680043.9.9999.1"
    assoc = associate(node.port, private, CTImageStorage)
    assert assoc.is_established
    (rejected,) = assoc.rejected_contexts
    assert rejected.abstract_syntax == private
    assert rejected.result == 0x03  # abstract syntax not supported
    assoc.release()


def test_transfer_syntax_is_accepted_as_proposed(node: DicomNode) -> None:
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    for syntax in (JPEG2000Lossless, JPEGLSLossless, RLELossless, ExplicitVRLittleEndian):
        assoc = associate(node.port, CTImageStorage, transfer_syntaxes=[syntax])
        (context,) = assoc.accepted_contexts
        assert context.transfer_syntax == [syntax]
        assoc.release()


def test_compressed_files_are_stored_as_received(
    node: DicomNode, archive: Archive, tmp_path: Path
) -> None:
    from pydicom.uid import JPEG2000Lossless

    path = factories.write(factories.j2k_ct(), tmp_path)
    assoc = associate(node.port, CTImageStorage, transfer_syntaxes=[JPEG2000Lossless])
    assert assoc.send_c_store(path).Status == 0
    assoc.release()
    (stored,) = archive.iter_instances()
    assert stored.transfer_syntax_uid == JPEG2000Lossless
    with archive.blob_file(stored.blob_key) as blob:
        assert factories.after_meta(blob) == factories.after_meta(path)


def test_deflated_transfer_syntax_is_not_negotiated_by_default(node: DicomNode) -> None:
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, [DeflatedExplicitVRLittleEndian])
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DALAT")
    assert assoc.is_established
    (rejected,) = assoc.rejected_contexts
    assert rejected.abstract_syntax == CTImageStorage
    assert rejected.result == 0x04  # transfer syntaxes not supported
    assoc.release()
