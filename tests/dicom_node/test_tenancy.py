"""Hospitals as tenants over DIMSE: a peer registered for a hospital finds, moves and gets
only that hospital's studies and those shared with it (pynetdicom, and DCMTK's findscu as
an independent client); its modality cannot add to another hospital's study; a share
opens the study to it and its revocation closes it again."""

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import CTImageStorage
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as StudyRootFind
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as StudyRootGet
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as StudyRootMove
from sqlalchemy import func, select

from dicom_node.node import DicomNode
from storage import Archive, PeerRegistry
from storage.access import Actor, grant, revoke_grant
from storage.index.tables import Instance
from storage.scope import EVERYTHING
from tests import factories
from tests.conftest import associate, audit_row, free_port, need
from tests.dicom_node.test_retrieve import Receiver

A_AET, B_AET = "CT_DALAT", "WS_BAOLOC"
A, B = "BV-DALAT", "BV-BAOLOC"
ADMIN = Actor("admin", "admin", None, EVERYTHING)


@pytest.fixture
def studies(node: DicomNode, peers: PeerRegistry, tmp_path: Path) -> tuple[str, str]:
    """One study sent by hospital A's CT, one by hospital B's; B's workstation receives."""
    peers.add(name="ct-dalat", aet=A_AET, host="127.0.0.1", port=free_port(), hospital=A)
    uids = []
    for aet, hospital in ((A_AET, A), (B_AET, B)):
        if aet == B_AET:
            peers.add(name="ws-baoloc", aet=aet, host="127.0.0.1", port=free_port(), hospital=B)
        ds = factories.image(patient_id=hospital)
        path = factories.write(ds, tmp_path / aet)
        assoc = associate(node.port, CTImageStorage, ae_title=aet)
        assert assoc.send_c_store(path).Status == 0
        assoc.release()
        uids.append(str(ds.StudyInstanceUID))
    return uids[0], uids[1]


def _find(port: int, aet: str) -> set[str]:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    assoc = associate(port, StudyRootFind, ae_title=aet)
    found = {
        str(identifier.StudyInstanceUID)
        for status, identifier in assoc.send_c_find(query, StudyRootFind)
        if status and status.Status == 0xFF00 and identifier is not None
    }
    assoc.release()
    return found


def _get(port: int, aet: str, study: str) -> tuple[int, dict[str, bytes]]:
    receiver = Receiver()
    ae = AE(ae_title=aet)
    ae.add_requested_context(StudyRootGet)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="DALAT",
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, receiver.handle)],
    )
    *_, (final, _) = assoc.send_c_get(identifier, StudyRootGet)
    assoc.release()
    return int(final.NumberOfCompletedSuboperations or 0), receiver.received


def test_a_peer_finds_and_gets_its_own_hospitals_studies_only(
    node: DicomNode, studies: tuple[str, str]
) -> None:
    a, b = studies
    assert _find(node.port, B_AET) == {b}
    assert _find(node.port, A_AET) == {a}
    assert _get(node.port, B_AET, a)[0] == 0  # as if A's study did not exist
    completed, received = _get(node.port, B_AET, b)
    assert completed == 1
    assert len(received) == 1


def test_a_share_opens_a_study_to_a_hospitals_nodes(
    node: DicomNode, archive: Archive, studies: tuple[str, str]
) -> None:
    a, b = studies
    shared = grant(archive, a, by=ADMIN, hospital=B)
    assert _find(node.port, B_AET) == {a, b}
    assert _get(node.port, B_AET, a)[0] == 1
    revoke_grant(archive, shared, by=ADMIN)
    assert _find(node.port, B_AET) == {b}


def test_a_move_of_another_hospitals_study_sends_nothing(
    node: DicomNode, peers: PeerRegistry, studies: tuple[str, str]
) -> None:
    a, _ = studies
    receiver = Receiver()
    ae = AE(ae_title="B_ARCHIVE")
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, receiver.handle)]
    )
    peers.add(name="b-archive", aet="B_ARCHIVE", host="127.0.0.1", port=port, hospital=B)
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = a
        assoc = associate(node.port, StudyRootMove, ae_title=B_AET)
        *_, (final, _) = assoc.send_c_move(identifier, "B_ARCHIVE", StudyRootMove)
        assoc.release()
    finally:
        server.shutdown()
    assert (final.Status, final.NumberOfCompletedSuboperations) == (0, 0)
    assert receiver.received == {}


def test_a_modality_cannot_add_to_another_hospitals_study(
    node: DicomNode, archive: Archive, studies: tuple[str, str], tmp_path: Path
) -> None:
    a, _ = studies
    intruder = factories.image(patient_id=A, study_uid=a)
    path = factories.write(intruder, tmp_path / "intruder")
    assoc = associate(node.port, CTImageStorage, ae_title=B_AET)
    status = assoc.send_c_store(path)
    assoc.release()
    assert status.Status == 0xA900  # refused; the study is not named as another's
    with archive.read() as conn:
        count = conn.scalar(
            select(func.count())
            .select_from(Instance)
            .where(Instance.sop_instance_uid == intruder.SOPInstanceUID)
        )
    assert count == 0


def test_findscu_of_another_hospital_sees_nothing_of_it(
    node: DicomNode, studies: tuple[str, str], tmp_path: Path
) -> None:
    a, b = studies
    result = subprocess.run(
        [need("findscu"), "-S", "-X", "-aet", B_AET, "-aec", "DALAT",
         "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientID",
         "127.0.0.1", str(node.port)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = {str(dcmread(p).StudyInstanceUID) for p in tmp_path.glob("rsp*.dcm")}
    assert found == {b}
    row = audit_row(node.archive, action="query", actor=B_AET)
    assert row.hospital == B
    assert a not in (row.detail or "")
