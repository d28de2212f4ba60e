"""The audit trail as DICOM / IHE ATNA messages over syslog, and the auditors' search."""

import base64
import contextlib
import datetime as dt
import ipaddress
import re
import socket
import socketserver
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from storage import Archive, StorageSettings
from storage.atna import (
    BOM,
    AuditRow,
    AuditSource,
    audit_message_xml,
    octet_frame,
    outcome_indicator,
    syslog_message,
)
from storage.audit_forwarder import AuditForwarder, SyslogTransport
from storage.audit_query import find_audit_events
from storage.errors import InvalidQuery, StorageError
from storage.index.tables import AuditEvent, AuditForwarding
from tests.conftest import free_port

SOURCE = AuditSource(source_id="DALAT@pacs-1", hostname="pacs-1", aet="DALAT", site="SYT-LD")
AT = datetime(2026, 11, 30, 8, 15, 42, 123456, tzinfo=UTC)
SYSLOG = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<proc>\S+) (?P<msgid>\S+)"
    rb" - (?P<msg>.*)\Z",
    re.DOTALL,
)


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def storage_settings(request: pytest.FixtureRequest, tmp_path: Path) -> StorageSettings:
    """The forwarder's position lives in the index: both databases, the folder blob store."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    return StorageSettings(
        data_dir=tmp_path / "archive", database_url=url, min_free_mb=0, _env_file=None
    )


def row(**changes: Any) -> AuditRow:
    values: dict[str, Any] = {
        "id": 1,
        "at": AT,
        "action": "retrieve",
        "outcome": "success",
        "actor": "Nguyễn Văn Anh",
        "source_address": "10.1.2.50",
        "hospital": "BVDKLD",
        "patient_id": "BN-0042",
        "study_instance_uid": "1.2.826.0.1.3680043.8.498.1",
        "detail": "WADO-RS metadata of 3 instance(s)",
    }
    return AuditRow(**{**values, **changes})


def xml_of(data: bytes | str) -> ET.Element:
    """Parse what our own code wrote (no entities, no DTD: nothing for defusedxml to stop)."""
    return ET.fromstring(data)  # noqa: S314


def parse(audit: AuditRow) -> ET.Element:
    return xml_of(audit_message_xml(audit, SOURCE))


def code(element: ET.Element | None) -> tuple[str | None, str | None]:
    assert element is not None
    return element.get("csd-code"), element.get("codeSystemName")


# -- the audit message (PS3.15 A.5) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "event_id", "action_code", "type_code"),
    [
        ("store", "110104", "C", None),
        ("retrieve", "110104", "R", None),
        ("query", "110112", "E", None),
        ("association", "110114", "E", "110122"),
        ("export", "110106", "R", None),
        ("ai-setting", "110113", "E", "110131"),
        ("delete", "110105", "D", None),
        ("something-new", "110100", "E", "something-new"),
    ],
)
def test_actions_become_dicom_events(
    action: str, event_id: str, action_code: str, type_code: str | None
) -> None:
    message = parse(row(action=action))
    assert message.tag == "AuditMessage"
    identification = message.find("EventIdentification")
    assert identification is not None
    assert identification.get("EventActionCode") == action_code
    assert identification.get("EventDateTime") == "2026-11-30T08:15:42.123456Z"
    assert code(identification.find("EventID")) == (event_id, "DCM")
    type_element = identification.find("EventTypeCode")
    if type_code is None:
        assert type_element is None
    else:
        assert type_element is not None
        assert type_element.get("csd-code") == type_code


@pytest.mark.parametrize(
    ("outcome", "indicator"),
    [
        ("success", "0"),
        ("accepted", "0"),
        ("started", "0"),
        ("rejected", "4"),
        ("refused", "4"),
        ("failure", "8"),
        ("error", "8"),
    ],
)
def test_outcomes(outcome: str, indicator: str) -> None:
    assert outcome_indicator(outcome) == indicator
    identification = parse(row(outcome=outcome)).find("EventIdentification")
    assert identification is not None
    assert identification.get("EventOutcomeIndicator") == indicator


def test_participants_and_objects() -> None:
    message = parse(row())
    peer, archive = message.findall("ActiveParticipant")
    assert peer.get("UserID") == "Nguyễn Văn Anh"  # Vietnamese survives the trip
    assert peer.get("UserIsRequestor") == "true"
    assert peer.get("NetworkAccessPointID") == "10.1.2.50"
    assert peer.get("NetworkAccessPointTypeCode") == "2"
    assert code(peer.find("RoleIDCode")) == ("110152", "DCM")  # the destination of a retrieve
    assert archive.get("UserID") == "DALAT@pacs-1"
    assert archive.get("AlternativeUserID") == "AETITLES=DALAT"
    assert archive.get("UserIsRequestor") == "false"
    assert code(archive.find("RoleIDCode")) == ("110153", "DCM")
    source = message.find("AuditSourceIdentification")
    assert source is not None
    assert source.get("AuditSourceID") == "DALAT@pacs-1"
    assert source.get("AuditEnterpriseSiteID") == "BVDKLD"
    patient, study = message.findall("ParticipantObjectIdentification")
    assert patient.get("ParticipantObjectID") == "BN-0042"
    assert patient.get("ParticipantObjectTypeCode") == "1"
    assert patient.get("ParticipantObjectTypeCodeRole") == "1"
    assert code(patient.find("ParticipantObjectIDTypeCode")) == ("2", "RFC-3881")
    assert study.get("ParticipantObjectID") == "1.2.826.0.1.3680043.8.498.1"
    assert study.get("ParticipantObjectTypeCode") == "2"
    assert study.get("ParticipantObjectTypeCodeRole") == "3"
    assert code(study.find("ParticipantObjectIDTypeCode")) == ("110180", "DCM")
    # The schema's order: event, participants, source, objects.
    assert [child.tag for child in message] == [
        "EventIdentification",
        "ActiveParticipant",
        "ActiveParticipant",
        "AuditSourceIdentification",
        "ParticipantObjectIdentification",
        "ParticipantObjectIdentification",
    ]


def test_a_store_comes_from_the_peer() -> None:
    peer, archive = parse(row(action="store")).findall("ActiveParticipant")
    assert code(peer.find("RoleIDCode")) == ("110153", "DCM")
    assert code(archive.find("RoleIDCode")) == ("110152", "DCM")


def test_a_query_carries_its_text_and_only_the_objects_it_names() -> None:
    detail = "C-FIND STUDY [PatientName=NGUYỄN*] -> 2 match(es)"
    message = parse(row(action="query", patient_id=None, study_instance_uid=None, detail=detail))
    (query,) = message.findall("ParticipantObjectIdentification")
    assert query.get("ParticipantObjectTypeCodeRole") == "24"
    assert code(query.find("ParticipantObjectIDTypeCode")) == ("110181", "DCM")
    text = query.findtext("ParticipantObjectQuery")
    assert text is not None
    assert base64.b64decode(text).decode() == detail


def test_hostile_text_is_escaped_not_injected() -> None:
    detail = 'a"b<c>&</EventOutcomeDescription><Evil/>\x00\x1b end'
    message = parse(row(detail=detail, actor='x" UserIsRequestor="false'))
    assert message.find(".//Evil") is None
    assert message.findtext("EventIdentification/EventOutcomeDescription") == (
        'a"b<c>&</EventOutcomeDescription><Evil/>\ufffd\ufffd end'
    )
    assert message.findall("ActiveParticipant")[0].get("UserIsRequestor") == "true"


def test_a_row_without_actor_or_address_still_makes_a_valid_message() -> None:
    message = parse(row(actor=None, source_address=None, hospital=None, patient_id=None))
    peer = message.findall("ActiveParticipant")[0]
    assert peer.get("UserID") == "unknown"
    assert peer.get("NetworkAccessPointID") is None
    source = message.find("AuditSourceIdentification")
    assert source is not None
    assert source.get("AuditEnterpriseSiteID") == "SYT-LD"


# -- RFC 5424 and the framing ---------------------------------------------------------------


def test_syslog_header() -> None:
    message = syslog_message(row(), SOURCE, procid=4242)
    match = SYSLOG.match(message)
    assert match is not None
    assert int(match["pri"]) == 10 * 8 + 5  # authpriv.notice
    assert match["ts"] == b"2026-11-30T08:15:42.123456Z"
    assert match["host"] == b"pacs-1"
    assert match["app"] == b"dalat-pacs"
    assert match["proc"] == b"4242"
    assert match["msgid"] == b"IHE+RFC-3881"
    body = match["msg"]
    assert body.startswith(BOM)
    assert xml_of(body[len(BOM) :].decode("utf-8")).tag == "AuditMessage"
    assert datetime.fromisoformat(match["ts"].decode()) == AT


def test_a_failure_is_a_warning() -> None:
    match = SYSLOG.match(syslog_message(row(outcome="rejected"), SOURCE))
    assert match is not None
    assert int(match["pri"]) == 10 * 8 + 4


def test_header_fields_are_printable_ascii() -> None:
    source = AuditSource(source_id="x", hostname="máy chủ 1")
    match = SYSLOG.match(syslog_message(row(), source, procid=""))
    assert match is not None
    assert match["host"] == b"mych1"
    assert match["proc"] == b"-"


def test_octet_framing_counts_bytes() -> None:
    message = "<85>1 - - - - - - \ufeffNguyễn".encode()
    assert len(message) != len(message.decode())
    framed = octet_frame(message)
    assert framed == str(len(message)).encode() + b" " + message
    assert framed.startswith(b"29 ")


# -- receivers ------------------------------------------------------------------------------


class Received:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.lock = threading.Lock()

    def add(self, message: bytes) -> None:
        with self.lock:
            self.messages.append(message)

    def details(self) -> list[str]:
        with self.lock:
            messages = list(self.messages)
        found = []
        for message in messages:
            match = SYSLOG.match(message)
            assert match is not None
            xml = xml_of(match["msg"][len(BOM) :])
            found.append(xml.findtext("EventIdentification/EventOutcomeDescription") or "")
        return found

    def wait_for(self, count: int, timeout: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)  # anything more would be a duplicate
        return self.details()


def _frames(stream: Any, received: Received) -> None:
    """Read RFC 6587 octet-counted frames until the peer closes."""
    while True:
        length = b""
        while not length.endswith(b" "):
            byte = stream.read(1)
            if not byte:
                return
            length += byte
        received.add(stream.read(int(length)))


class _TcpHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        _frames(self.rfile, self.server.received)  # type: ignore[attr-defined]


class _UdpHandler(socketserver.DatagramRequestHandler):
    def handle(self) -> None:
        self.server.received.add(self.rfile.read())  # type: ignore[attr-defined]


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, port: int, context: ssl.SSLContext | None = None) -> None:
        self.received = Received()
        self.context = context
        self.connections: list[socket.socket] = []
        super().__init__(("127.0.0.1", port), _TcpHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True)
        self.connections.append(sock)
        return sock, address

    def server_close(self) -> None:
        """Stop as a collector does: its listening socket and every connection closed."""
        super().server_close()
        for sock in self.connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        self.received = Received()
        super().__init__(("127.0.0.1", port), _UdpHandler)


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[socketserver.BaseServer] = []

    def start(server: socketserver.BaseServer) -> socketserver.BaseServer:
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def stop(server: socketserver.BaseServer) -> None:
    server.shutdown()
    server.server_close()


def add_rows(archive: Archive, count: int, start: int = 0, **values: Any) -> None:
    for i in range(start, start + count):
        archive.audit(
            action=values.get("action", "query"),
            outcome="success",
            actor=values.get("actor", "Trần Thị Bích"),
            source_address="10.1.2.50",
            detail=f"row {i}",
        )
    archive.run_write(lambda conn, now: None)  # after the queued audit rows: they are in


def forwarder(archive: Archive, url: str, **options: Any) -> AuditForwarder:
    transport = SyslogTransport(
        url,
        ca_file=options.pop("ca_file", None),
        cert_file=options.pop("cert_file", None),
        key_file=options.pop("key_file", None),
        timeout=5,
    )
    options.setdefault("batch", 7)
    return AuditForwarder(archive, transport, name=url, source=SOURCE, **options)


def position(archive: Archive, name: str) -> int | None:
    with archive.read() as conn:
        return conn.scalar(select(AuditForwarding.last_id).where(AuditForwarding.name == name))


def expected(count: int, start: int = 0) -> list[str]:
    return [f"row {i}" for i in range(start, start + count)]


# -- the forwarder --------------------------------------------------------------------------


def test_tcp_receives_every_row_once_in_order(archive: Archive, serve: Any) -> None:
    server = serve(_TcpServer(0))
    url = f"tcp://127.0.0.1:{server.server_address[1]}"
    sender = forwarder(archive, url)
    add_rows(archive, 20)
    assert sender.deliver_due() == 20  # three batches of 7, 7, 6
    assert server.received.wait_for(20) == expected(20)
    assert position(archive, url) is not None
    assert sender.deliver_due() == 0
    add_rows(archive, 3, start=20)
    assert sender.deliver_due() == 3
    assert server.received.wait_for(23) == expected(23)
    sender.stop()


def test_rows_wait_while_the_collector_is_down(archive: Archive, serve: Any) -> None:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    now = [0.0]
    sender = forwarder(archive, url, min_pause=1, max_pause=4, clock=lambda: now[0])
    add_rows(archive, 10)
    assert sender.deliver_due() == 0
    assert position(archive, url) == 0
    assert sender.deliver_due() == 0  # pausing: no try at all
    now[0] = 1.5
    assert sender.deliver_due() == 0  # tried again, failed: the pause doubles to 2 s
    now[0] = 3.0
    server = serve(_TcpServer(port))
    assert sender.deliver_due() == 0  # still pausing
    now[0] = 3.6
    assert sender.deliver_due() == 10
    assert server.received.wait_for(10) == expected(10)
    sender.stop()


def test_a_restarted_collector_loses_nothing(archive: Archive, serve: Any) -> None:
    port = free_port()
    first = serve(_TcpServer(port))
    url = f"tcp://127.0.0.1:{port}"
    now = [0.0]
    sender = forwarder(archive, url, clock=lambda: now[0])
    add_rows(archive, 5)
    assert sender.deliver_due() == 5
    assert first.received.wait_for(5) == expected(5)
    stop(first)  # the kept connection is now closed by the collector
    time.sleep(0.1)
    add_rows(archive, 5, start=5)
    second = serve(_TcpServer(port))
    delivered = sender.deliver_due()
    if delivered == 0:  # the drop surfaced only as an error: sent again after the pause
        now[0] = 10.0
        delivered = sender.deliver_due()
    assert delivered == 5
    assert second.received.wait_for(5) == expected(5, start=5)
    sender.stop()


def test_udp(archive: Archive, serve: Any) -> None:
    server = serve(_UdpServer(0))
    url = f"udp://127.0.0.1:{server.server_address[1]}"
    sender = forwarder(archive, url)
    add_rows(archive, 12, actor="Lê Văn Đức")
    assert sender.deliver_due() == 12
    assert server.received.wait_for(12) == expected(12)
    match = SYSLOG.match(server.received.messages[0])
    assert match is not None
    xml = xml_of(match["msg"][len(BOM) :])
    assert xml.findall("ActiveParticipant")[0].get("UserID") == "Lê Văn Đức"
    sender.stop()


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (also its own CA), and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_with_a_client_certificate(archive: Archive, serve: Any, tmp_path: Path) -> None:
    server_cert, server_key = _certificate(tmp_path, "collector")
    client_cert, client_key = _certificate(tmp_path, "archive")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_cert, server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(client_cert)
    server = serve(_TcpServer(0, context))
    url = f"tls://127.0.0.1:{server.server_address[1]}"
    sender = forwarder(
        archive, url, ca_file=server_cert, cert_file=client_cert, key_file=client_key
    )
    add_rows(archive, 9)
    assert sender.deliver_due() == 9
    assert server.received.wait_for(9) == expected(9)
    sender.stop()


def test_tls_refuses_a_collector_it_cannot_verify(
    archive: Archive, serve: Any, tmp_path: Path
) -> None:
    server_cert, server_key = _certificate(tmp_path, "collector")
    other_ca, _ = _certificate(tmp_path, "someone-else")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_cert, server_key)
    server = serve(_TcpServer(0, context))
    url = f"tls://127.0.0.1:{server.server_address[1]}"
    sender = forwarder(archive, url, ca_file=other_ca)
    add_rows(archive, 2)
    assert sender.deliver_due() == 0
    assert position(archive, url) == 0
    assert server.received.messages == []
    sender.stop()


def test_a_recent_gap_in_ids_holds_later_rows_back(archive: Archive, serve: Any) -> None:
    """On PostgreSQL a lower id may commit after a higher one: it must not be skipped."""
    server = serve(_TcpServer(0))
    url = f"tcp://127.0.0.1:{server.server_address[1]}"
    sender = forwarder(archive, url, gap_grace=timedelta(seconds=30))
    now = datetime.now(UTC)

    def put(id: int, at: datetime) -> None:
        values = {"id": id, "at": at, "action": "query", "outcome": "success"}
        archive.run_write(lambda conn, _: conn.execute(insert(AuditEvent).values(**values)))

    put(1, now)
    put(3, now)  # 2 is still in flight
    assert sender.deliver_due() == 1
    put(2, now)
    assert sender.deliver_due() == 2
    put(10, now - timedelta(minutes=5))  # 4 to 9 rolled back long ago
    assert sender.deliver_due() == 1
    assert server.received.wait_for(4) == ["", "", "", ""]
    assert position(archive, url) == 10
    sender.stop()


def test_one_node_at_a_time(archive: Archive, serve: Any) -> None:
    server = serve(_TcpServer(0))
    url = f"tcp://127.0.0.1:{server.server_address[1]}"
    first, second = forwarder(archive, url), forwarder(archive, url)
    second._owner = "another-node:1"
    add_rows(archive, 4)
    assert first.deliver_due() == 4
    add_rows(archive, 4, start=4)
    assert second.deliver_due() == 0  # the first holds the lease
    assert first.deliver_due() == 4
    assert server.received.wait_for(8) == expected(8)
    first.stop()
    second.stop()


def test_the_thread(archive: Archive, serve: Any) -> None:
    server = serve(_TcpServer(0))
    sender = forwarder(archive, f"tcp://127.0.0.1:{server.server_address[1]}")
    sender.start(interval=0.05)
    add_rows(archive, 15)
    assert server.received.wait_for(15) == expected(15)
    sender.stop()


def test_settings(archive: Archive, storage_settings: StorageSettings) -> None:
    assert AuditForwarder.from_settings(archive, storage_settings) is None
    settings = storage_settings.model_copy(update={"audit_syslog_url": "tls://collector.vn"})
    made = AuditForwarder.from_settings(archive, settings, aet="DALAT")
    assert made is not None
    assert (made.transport.host, made.transport.port) == ("collector.vn", 6514)
    assert made.source.source_id.startswith("DALAT@")
    with pytest.raises(StorageError):
        SyslogTransport("http://collector.vn")


# -- the auditors' search -------------------------------------------------------------------


def test_find_audit_events(archive: Archive) -> None:
    base = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [
        ("query", "success", "Phạm Minh", "P1", "1.2.3", 0),
        ("retrieve", "success", "Phạm Minh", "P1", "1.2.3", 1),
        ("retrieve", "refused", "VIEWER", None, None, 2),
        ("store", "success", "CT_BVDK", "P2", "1.2.4", 3),
        ("association", "rejected", "EVIL", None, None, 4),
    ]

    def write(conn: Any, _: datetime) -> None:
        for action, outcome, actor, patient, study, day in rows:
            conn.execute(
                insert(AuditEvent).values(
                    at=base + dt.timedelta(days=day),
                    action=action,
                    outcome=outcome,
                    actor=actor,
                    patient_id=patient,
                    study_instance_uid=study,
                )
            )

    archive.run_write(write)

    def actions(**filters: Any) -> list[str]:
        return [found["action"] for found in find_audit_events(archive, **filters)]

    assert actions() == ["association", "store", "retrieve", "retrieve", "query"]
    assert actions(action="retrieve") == ["retrieve", "retrieve"]
    assert actions(actor="Phạm Minh") == ["retrieve", "query"]
    assert actions(patient_id="P1", action="query") == ["query"]
    assert actions(study="1.2.4") == ["store"]
    assert actions(outcome="refused") == ["retrieve"]
    assert actions(since=base + dt.timedelta(days=1), until=base + dt.timedelta(days=3)) == [
        "retrieve",
        "retrieve",
    ]
    assert actions(limit=2) == ["association", "store"]
    assert actions(limit=2, offset=2) == ["retrieve", "retrieve"]
    found = find_audit_events(archive, action="store")[0]
    assert found["at"] == base + dt.timedelta(days=3)
    assert set(found) >= {"id", "at", "actor", "source_address", "hospital", "detail"}
    with pytest.raises(InvalidQuery):
        find_audit_events(archive, limit=0)
    with pytest.raises(InvalidQuery):
        find_audit_events(archive, offset=-1)
