"""Who may associate, and the guards that act before any DICOM is parsed."""

import logging
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from pynetdicom.sop_class import Verification

from dicom_node import DicomSettings
from dicom_node.node import DicomNode
from storage import Archive, PeerRegistry
from tests.conftest import associate, audit_row


def test_a_registered_peer_is_accepted_and_echo_works(node: DicomNode) -> None:
    assoc = associate(node.port, Verification)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def test_an_unknown_calling_ae_is_rejected_with_a_reason(
    node: DicomNode, archive: Archive, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dicom_node"):
        assoc = associate(node.port, Verification, ae_title="STRANGER")
    assert assoc.is_rejected
    assert (assoc.acceptor.primitive.result, assoc.acceptor.primitive.diagnostic) == (0x01, 0x03)
    assert "calling AE title 'STRANGER' is not a registered peer" in caplog.text
    assert audit_row(archive, outcome="rejected").actor == "STRANGER"


def test_a_wrong_called_ae_is_rejected(node: DicomNode) -> None:
    assoc = associate(node.port, Verification, called="NOTUS")
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.diagnostic == 0x07


def test_a_peer_bound_to_its_host_is_rejected_from_elsewhere(
    node: DicomNode, peers: PeerRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    peers.add(name="ct-room-2", aet="CT2", host="10.20.30.40", port=104, check_host=True)
    with caplog.at_level(logging.WARNING, logger="dicom_node"):
        assoc = associate(node.port, Verification, ae_title="CT2")
    assert assoc.is_rejected
    assert "registered for 10.20.30.40, not for 127.0.0.1" in caplog.text
    peers.add(name="ct-room-3", aet="CT3", host="127.0.0.1", port=104, check_host=True)
    assert associate(node.port, Verification, ae_title="CT3").is_established


def test_any_caller_is_accepted_when_the_demo_setting_is_on(
    archive: Archive, dicom_settings: DicomSettings
) -> None:
    dicom_settings.accept_any_caller = True
    node = DicomNode(archive, dicom_settings, host="127.0.0.1")
    node.start()
    try:
        assoc = associate(node.port, Verification, ae_title="ANYONE")
        assert assoc.is_established
        assoc.release()
    finally:
        node.stop()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    return sock


def _closed_by_peer(sock: socket.socket, payload: bytes, *, within: float = 5.0) -> bool:
    """Send `payload` repeatedly until the peer closes the connection (True) or time runs out."""
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            sock.sendall(payload)
    except (BrokenPipeError, ConnectionResetError):
        return True
    return False


def test_a_pdu_declaring_4_gib_is_cut_off_after_its_header(
    node: DicomNode, caplog: pytest.LogCaptureFixture
) -> None:
    """PDU length OOM (pynetdicom issue #1086): no buffering, no association needed."""
    with caplog.at_level(logging.WARNING, logger="dicom_node"):
        sock = _connect(node.port)
        sock.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF))
        assert _closed_by_peer(sock, b"\0" * 65536)
        sock.close()
    assert "declares 4294967295 bytes, more than the 65536 accepted" in caplog.text
    assoc = associate(node.port, Verification)  # and the listener goes on serving
    assert assoc.is_established
    assoc.release()


@pytest.fixture
def guarded_node(archive: Archive, peers: PeerRegistry) -> Iterator[DicomNode]:
    settings = DicomSettings(
        dicom_port=0, max_connections_per_address=2, acse_timeout=1, _env_file=None
    )
    node = DicomNode(archive, settings, host="127.0.0.1")
    node.start()
    yield node
    node.stop()


def test_connections_per_address_are_capped(
    guarded_node: DicomNode, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = _connect(guarded_node.port), _connect(guarded_node.port)
    time.sleep(0.2)
    with caplog.at_level(logging.WARNING, logger="dicom_node"):
        third = _connect(guarded_node.port)
        third.settimeout(5)
        assert third.recv(1) == b""  # closed at once, before any PDU
    assert "it already has 2 open" in caplog.text
    for sock in (first, second, third):
        sock.close()
    time.sleep(1.5)
    assoc = associate(guarded_node.port, Verification)
    assert assoc.is_established
    assoc.release()


def test_a_silent_connection_is_closed_at_the_association_timeout(
    guarded_node: DicomNode,
) -> None:
    sock = _connect(guarded_node.port)
    sock.settimeout(10)
    started = time.monotonic()
    assert sock.recv(1) == b""
    assert time.monotonic() - started < 5
    sock.close()
