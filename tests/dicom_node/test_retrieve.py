"""C-MOVE and C-GET: stored files go back out byte for byte, with PS3.4 counts."""

import logging
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
)
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelMove as PatientRootMove,
)
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet as StudyRootGet,
)
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelMove as StudyRootMove,
)
from pynetdicom.sop_class import Verification

from dicom_node.node import DicomNode
from storage import Archive, PeerRegistry
from tests import factories
from tests.conftest import associate, audit_row, free_port

DEST_AET = "TESTDEST"


class Receiver:
    """A storage SCP that keeps what it receives: {SOP Instance UID: dataset bytes}."""

    def __init__(self) -> None:
        self.received: dict[str, bytes] = {}

    def handle(self, event: Event) -> int:
        if _config.STORE_RECV_CHUNKED_DATASET:
            data = factories.after_meta(Path(event.dataset_path))
        else:
            data = event.encoded_dataset(include_meta=False)
        self.received[str(event.request.AffectedSOPInstanceUID)] = data
        return 0x0000


@pytest.fixture
def destination(peers: PeerRegistry) -> Iterator[Receiver]:
    receiver = Receiver()
    ae = AE(ae_title=DEST_AET)
    ae.add_supported_context(Verification)  # PS3.4 A.4: every AE is expected to support it
    for sop_class in (CTImageStorage, ComputedRadiographyImageStorage):
        ae.add_supported_context(
            sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless]
        )
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, receiver.handle)]
    )
    peers.add(name="dest", aet=DEST_AET, host="127.0.0.1", port=port)
    yield receiver
    server.shutdown()


@pytest.fixture
def study(node: DicomNode, tmp_path: Path) -> list[Path]:
    datasets = [*factories.ct_series(3), factories.j2k_ct()]
    datasets[-1].StudyInstanceUID = datasets[0].StudyInstanceUID
    paths = factories.write_all(datasets, tmp_path / "sent")
    assoc = associate(
        node.port, CTImageStorage, transfer_syntaxes=[ExplicitVRLittleEndian, JPEG2000Lossless]
    )
    for path in paths[:3]:
        assert assoc.send_c_store(path).Status == 0
    assoc.release()
    assoc = associate(node.port, CTImageStorage, transfer_syntaxes=[JPEG2000Lossless])
    assert assoc.send_c_store(paths[3]).Status == 0
    assoc.release()
    return paths


def identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def sent_bytes(paths: list[Path]) -> dict[str, bytes]:
    return {
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): factories.after_meta(p)
        for p in paths
    }


def test_move_a_study_to_a_registered_peer_byte_for_byte(
    node: DicomNode, study: list[Path], destination: Receiver, archive: Archive
) -> None:
    uid = str(dcmread(study[0]).StudyInstanceUID)
    assoc = associate(node.port, StudyRootMove)
    responses = list(
        assoc.send_c_move(identifier("STUDY", StudyInstanceUID=uid), DEST_AET, StudyRootMove)
    )
    assoc.release()
    statuses = [status for status, _ in responses]
    final = statuses[-1]
    assert final.Status == 0x0000
    assert final.NumberOfCompletedSuboperations == 4
    assert final.NumberOfFailedSuboperations == 0
    remaining = [s.NumberOfRemainingSuboperations for s in statuses[:-1]]
    assert remaining == sorted(remaining, reverse=True)
    assert destination.received == sent_bytes(study)
    audit = audit_row(archive, action="retrieve")
    assert (audit.study_instance_uid, audit.detail) == (uid, f"C-MOVE to {DEST_AET}")


def test_move_one_series_and_one_instance(
    node: DicomNode, study: list[Path], destination: Receiver
) -> None:
    first = dcmread(study[0])
    assoc = associate(node.port, PatientRootMove)
    *_, (final, _) = assoc.send_c_move(
        identifier(
            "IMAGE",
            PatientID=first.PatientID,
            StudyInstanceUID=first.StudyInstanceUID,
            SeriesInstanceUID=first.SeriesInstanceUID,
            SOPInstanceUID=first.SOPInstanceUID,
        ),
        DEST_AET,
        PatientRootMove,
    )
    assoc.release()
    assert final.Status == 0
    assert list(destination.received) == [first.SOPInstanceUID]


def test_move_to_an_unknown_destination_is_a801(
    node: DicomNode, study: list[Path], destination: Receiver
) -> None:
    uid = str(dcmread(study[0]).StudyInstanceUID)
    assoc = associate(node.port, StudyRootMove)
    *_, (final, _) = assoc.send_c_move(
        identifier("STUDY", StudyInstanceUID=uid), "NOWHERE", StudyRootMove
    )
    assoc.release()
    assert final.Status == 0xA801
    assert destination.received == {}


def test_move_without_the_unique_key_is_refused(
    node: DicomNode, study: list[Path], destination: Receiver
) -> None:
    assoc = associate(node.port, StudyRootMove)
    *_, (final, _) = assoc.send_c_move(
        identifier("SERIES", StudyInstanceUID="1.2.3"), DEST_AET, StudyRootMove
    )
    assoc.release()
    assert final.Status == 0xA900
    assert destination.received == {}


def test_move_of_nothing_is_a_plain_success(node: DicomNode, destination: Receiver) -> None:
    assoc = associate(node.port, StudyRootMove)
    *_, (final, _) = assoc.send_c_move(
        identifier("STUDY", StudyInstanceUID="1.2.3.4"), DEST_AET, StudyRootMove
    )
    assoc.release()
    assert (final.Status, final.NumberOfCompletedSuboperations) == (0, 0)


def get(port: int, ident: Dataset, syntaxes: list[str]) -> tuple[Dataset, Dataset | None, Receiver]:
    receiver = Receiver()
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(StudyRootGet)
    for sop_class in (CTImageStorage, ComputedRadiographyImageStorage):
        for syntax in syntaxes:  # one context per syntax, so each stored file finds its own
            ae.add_requested_context(sop_class, [syntax])
    roles = [
        build_role(c, scp_role=True) for c in (CTImageStorage, ComputedRadiographyImageStorage)
    ]
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="DALAT",
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, receiver.handle)],
    )
    assert assoc.is_established
    *_, (final, final_identifier) = assoc.send_c_get(ident, StudyRootGet)
    assoc.release()
    return final, final_identifier, receiver


def test_get_a_study_byte_for_byte(node: DicomNode, study: list[Path]) -> None:
    uid = str(dcmread(study[0]).StudyInstanceUID)
    final, _, receiver = get(
        node.port,
        identifier("STUDY", StudyInstanceUID=uid),
        [ExplicitVRLittleEndian, JPEG2000Lossless],
    )
    assert (final.Status, final.NumberOfCompletedSuboperations) == (0, 4)
    assert receiver.received == sent_bytes(study)


def test_get_converts_between_uncompressed_syntaxes_only(
    node: DicomNode, study: list[Path]
) -> None:
    uid = str(dcmread(study[0]).StudyInstanceUID)
    final, failed, receiver = get(
        node.port, identifier("STUDY", StudyInstanceUID=uid), [ImplicitVRLittleEndian]
    )
    assert final.NumberOfCompletedSuboperations == 3  # re-encoded as Implicit VR
    assert final.NumberOfFailedSuboperations == 1  # the JPEG 2000 one is never decoded
    j2k = str(dcmread(study[3], stop_before_pixels=True).SOPInstanceUID)
    assert j2k not in receiver.received
    for path in study[:3]:
        original = dcmread(path)
        received = read_dataset(BytesIO(receiver.received[original.SOPInstanceUID]), True, True)
        assert received.PixelData == original.PixelData
        assert received.PatientName == "Nguyễn^Thị Hằng"
    assert final.Status == 0xB000  # some sub-operations failed
    assert failed is not None
    assert failed.FailedSOPInstanceUIDList == j2k


def test_a_missing_blob_fails_its_sub_operation_and_the_rest_go_on(
    node: DicomNode, study: list[Path], archive: Archive, caplog: pytest.LogCaptureFixture
) -> None:
    uid = str(dcmread(study[0]).StudyInstanceUID)
    lost = next(archive.iter_instances())
    archive.blobs.delete(lost.blob_key)
    with caplog.at_level(logging.ERROR, logger="dicom_node"):
        final, final_identifier, receiver = get(
            node.port,
            identifier("STUDY", StudyInstanceUID=uid),
            [ExplicitVRLittleEndian, JPEG2000Lossless],
        )
    assert final.Status == 0xB000  # sub-operations complete, one or more failures
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (3, 1)
    assert final_identifier is not None
    assert final_identifier.FailedSOPInstanceUIDList == lost.sop_instance_uid
    assert lost.sop_instance_uid not in receiver.received
    assert f"Instance {lost.sop_instance_uid} cannot be sent: blob" in caplog.text
