"""Storage Commitment Push Model: the report says which instances are safe, and arrives."""

import queue
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import StorageCommitmentPushModel

from dicom_node import DicomSettings
from dicom_node.node import DicomNode
from storage import Archive, PeerRegistry
from tests import factories
from tests.conftest import SCU_AET, associate, blob_bytes, free_port, overwrite_blob

INSTANCE = "1.2.840.10008.1.20.1.1"


def request(references: list[tuple[str, str]], transaction: str | None = None) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction or generate_uid()
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


@pytest.fixture
def stored(node: DicomNode, tmp_path: Path) -> list[tuple[str, str]]:
    datasets = factories.ct_series(3)
    assoc = associate(node.port, CTImageStorage)
    for path in factories.write_all(datasets, tmp_path):
        assert assoc.send_c_store(path).Status == 0
    assoc.release()
    return [(CTImageStorage, str(ds.SOPInstanceUID)) for ds in datasets]


class ReportListener:
    """The modality's side: receives N-EVENT-REPORTs on a new association."""

    def __init__(self, port: int) -> None:
        self.reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()
        self.ae = AE(ae_title=SCU_AET)
        self.ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self.server = self.ae.start_server(
            ("127.0.0.1", port),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._handle)],
        )

    def _handle(self, event: Event) -> tuple[int, None]:
        self.reports.put((int(event.event_type), event.event_information))
        return 0x0000, None

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def listener(peers: PeerRegistry) -> Iterator[ReportListener]:
    port = free_port()
    peers.remove("test-scu")
    peers.add(name="test-scu", aet=SCU_AET, host="127.0.0.1", port=port)
    listening = ReportListener(port)
    yield listening
    listening.close()


def send_action(port: int, ds: Dataset) -> int:
    assoc = associate(port, StorageCommitmentPushModel)
    status, _ = assoc.send_n_action(ds, 1, StorageCommitmentPushModel, INSTANCE)
    assoc.release()
    return int(status.Status)


def test_the_report_arrives_on_a_new_association(
    node: DicomNode, stored: list[tuple[str, str]], listener: ReportListener
) -> None:
    ds = request(stored)
    assert send_action(node.port, ds) == 0
    event_type, report = listener.reports.get(timeout=10)
    assert event_type == 1  # all committed
    assert report.TransactionUID == ds.TransactionUID
    assert sorted(i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence) == sorted(
        uid for _, uid in stored
    )
    assert "FailedSOPSequence" not in report


def test_the_report_arrives_on_the_same_association_while_it_is_open(
    node: DicomNode, stored: list[tuple[str, str]]
) -> None:
    reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()

    def handle(event: Event) -> tuple[int, None]:
        reports.put((int(event.event_type), event.event_information))
        return 0x0000, None

    ae = AE(ae_title=SCU_AET)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(
        "127.0.0.1", node.port, ae_title="DALAT", evt_handlers=[(evt.EVT_N_EVENT_REPORT, handle)]
    )
    ds = request(stored)
    status, _ = assoc.send_n_action(ds, 1, StorageCommitmentPushModel, INSTANCE)
    assert status.Status == 0
    event_type, report = reports.get(timeout=10)
    assoc.release()
    assert event_type == 1
    assert report.TransactionUID == ds.TransactionUID


def test_missing_and_corrupt_instances_are_reported_as_failed(
    node: DicomNode, archive: Archive, stored: list[tuple[str, str]], listener: ReportListener
) -> None:
    corrupt = next(i for i in archive.iter_instances() if i.sop_instance_uid == stored[1][1])
    data = bytearray(blob_bytes(archive, corrupt.blob_key))
    data[-1] ^= 0x01  # bit rot after receipt
    overwrite_blob(archive, corrupt.blob_key, bytes(data))
    missing = (CTImageStorage, generate_uid())
    assert send_action(node.port, request([*stored, missing])) == 0
    event_type, report = listener.reports.get(timeout=10)
    assert event_type == 2  # some failed
    assert sorted(i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence) == sorted(
        [stored[0][1], stored[2][1]]
    )
    failures = {i.ReferencedSOPInstanceUID: i.FailureReason for i in report.FailedSOPSequence}
    assert failures == {stored[1][1]: 0x0110, missing[1]: 0x0112}


def test_a_pending_request_survives_a_restart(
    archive: Archive,
    peers: PeerRegistry,
    stored: list[tuple[str, str]],
    tmp_path: Path,
) -> None:
    port = free_port()
    peers.remove("test-scu")
    peers.add(name="test-scu", aet=SCU_AET, host="127.0.0.1", port=port)
    settings = DicomSettings(dicom_port=0, commitment_retry_seconds=0.2, _env_file=None)
    first = DicomNode(archive, settings, host="127.0.0.1")
    first.start()
    ds = request(stored)
    assert send_action(first.port, ds) == 0  # the modality is not listening yet
    first.stop()

    listening = ReportListener(port)
    second = DicomNode(archive, settings, host="127.0.0.1")
    second.start()
    try:
        event_type, report = listening.reports.get(timeout=30)
    finally:
        second.stop()
        listening.close()
    assert (event_type, report.TransactionUID) == (1, ds.TransactionUID)


def test_a_malformed_request_is_refused(node: DicomNode) -> None:
    ds = Dataset()
    ds["TransactionUID"] = DataElement(0x00081195, "UI", "not a uid", validation_mode=config.IGNORE)
    ds.ReferencedSOPSequence = []
    assert send_action(node.port, ds) == 0x0115
