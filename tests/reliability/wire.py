"""The DICOM Upper Layer as bytes (PS3.8 9.3), for the hostile-input tests.

pynetdicom re-encodes the datasets it sends, and checks what it is asked to send; a
hostile modality does neither. :class:`RawAssociation` speaks the protocol over a plain
socket: it proposes any presentation contexts (unknown transfer syntaxes included), sends a
C-STORE whose dataset is exactly the bytes given, whatever their UIDs, and reads the answer.
The same encoders make the valid byte stream that the PDU fuzzer mutates.
"""

import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.9.9999.77"
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07
COMMAND, LAST = 0x01, 0x02
"""Bits of a PDV's message control header."""
PDU_NAMES = {1: "A-ASSOCIATE-RQ", 2: "A-ASSOCIATE-AC", 3: "A-ASSOCIATE-RJ", 4: "P-DATA-TF"}
PDU_NAMES |= {5: "A-RELEASE-RQ", 6: "A-RELEASE-RP", 7: "A-ABORT"}
RELEASE_RQ = struct.pack(">BBI", A_RELEASE_RQ, 0, 4) + bytes(4)
MAX_PDU = 64 * 1024
"""What we announce we receive (and the most we read of any PDU)."""


def _ae(title: str) -> bytes:
    return title.encode("ascii").ljust(16)[:16]


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _text(uid: str) -> bytes:
    return uid.encode("utf-8", "surrogateescape")


def associate_rq(
    calling: str, called: str, contexts: Sequence[tuple[int, str, Sequence[str]]]
) -> bytes:
    """An A-ASSOCIATE-RQ proposing (context ID, abstract syntax, transfer syntaxes)."""
    variable = _item(0x10, APPLICATION_CONTEXT.encode())
    for context_id, abstract, syntaxes in contexts:
        sub_items = _item(0x30, _text(abstract))
        sub_items += b"".join(_item(0x40, _text(syntax)) for syntax in syntaxes)
        variable += _item(0x20, bytes((context_id, 0, 0, 0)) + sub_items)
    user = _item(0x51, struct.pack(">I", MAX_PDU)) + _item(0x52, IMPLEMENTATION_UID.encode())
    variable += _item(0x50, user + _item(0x55, b"HOSTILE"))
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32) + variable
    return struct.pack(">BBI", A_ASSOCIATE_RQ, 0, len(body)) + body


def p_data(context_id: int, control: int, data: bytes) -> bytes:
    """A P-DATA-TF with one PDV."""
    pdv = struct.pack(">IBB", len(data) + 2, context_id, control) + data
    return struct.pack(">BBI", P_DATA_TF, 0, len(pdv)) + pdv


def _uid_value(uid: str) -> bytes:
    data = _text(uid)
    return data + b"\0" if len(data) % 2 else data


def command_set(elements: Sequence[tuple[int, bytes]]) -> bytes:
    """A command set (Implicit VR Little Endian, PS3.7 6.3) with its group length."""
    body = b"".join(
        struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value for tag, value in elements
    )
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def c_store_rq(message_id: int, sop_class: str, sop_instance: str) -> bytes:
    return command_set(
        [
            (0x00000002, _uid_value(sop_class)),
            (0x00000100, struct.pack("<H", 0x0001)),  # C-STORE-RQ
            (0x00000110, struct.pack("<H", message_id)),
            (0x00000700, struct.pack("<H", 0)),  # medium priority
            (0x00000800, struct.pack("<H", 0x0000)),  # a data set follows
            (0x00001000, _uid_value(sop_instance)),
        ]
    )


def c_echo_rq(message_id: int) -> bytes:
    return command_set(
        [
            (0x00000002, _uid_value(VERIFICATION)),
            (0x00000100, struct.pack("<H", 0x0030)),
            (0x00000110, struct.pack("<H", message_id)),
            (0x00000800, struct.pack("<H", 0x0101)),  # no data set
        ]
    )


def data_pdus(context_id: int, dataset: bytes, max_pdu: int) -> list[bytes]:
    """The dataset in P-DATA-TFs of at most `max_pdu` bytes (the last fragment flagged)."""
    size = max(1, max_pdu - 6)
    pieces = [dataset[i : i + size] for i in range(0, len(dataset), size)] or [b""]
    return [
        p_data(context_id, LAST if i == len(pieces) - 1 else 0, piece)
        for i, piece in enumerate(pieces)
    ]


def parse_command(data: bytes) -> dict[int, bytes]:
    elements = {}
    position = 0
    while position + 8 <= len(data):
        group, number, length = struct.unpack_from("<HHI", data, position)
        elements[(group << 16) | number] = data[position + 8 : position + 8 + length]
        position += 8 + length
    return elements


class Closed(Exception):
    """The peer closed the connection (or aborted) before answering."""


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    head = _read_exact(sock, 6)
    kind, _, length = struct.unpack(">BBI", head)
    if length > MAX_PDU + 6:
        raise Closed(f"the peer sent a PDU of {length} bytes")
    return kind, _read_exact(sock, length)


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise Closed("the connection was closed")
        data += chunk
    return data


@dataclass
class Answer:
    status: int | None
    """The DIMSE status; None when the association ended without one."""
    comment: str = ""
    ended_by: str = ""
    """How the association ended instead of answering (A-ABORT, closed...)."""


@dataclass
class RawAssociation:
    """An association over a plain socket: `contexts` are (abstract, transfer syntax) pairs,
    each proposed as its own presentation context."""

    port: int
    contexts: Sequence[tuple[str, str]]
    calling: str = "TESTSCU"
    called: str = "DALAT"
    timeout: float = 60
    results: dict[tuple[str, str], int] = field(default_factory=dict)
    """Each context's result (0 accepted, 3 abstract syntax and 4 transfer syntax not
    supported...)."""
    outcome: str = ""
    """accepted, rejected, or how it ended."""

    def __post_init__(self) -> None:
        self._ids = {pair: 2 * i + 1 for i, pair in enumerate(self.contexts)}
        self._message_id = 0
        self.max_pdu = 16 * 1024
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        proposed = [(cid, abstract, [ts]) for (abstract, ts), cid in self._ids.items()]
        self.sock.sendall(associate_rq(self.calling, self.called, proposed))
        try:
            kind, body = read_pdu(self.sock)
        except (Closed, OSError) as exc:
            self.outcome = f"closed during negotiation: {exc}"
            return
        if kind != A_ASSOCIATE_AC:
            self.outcome = PDU_NAMES.get(kind, f"PDU type {kind}")
            return
        self.outcome = "accepted"
        self._read_accept(body)

    def _read_accept(self, body: bytes) -> None:
        by_id = {cid: pair for pair, cid in self._ids.items()}
        position = 68
        while position + 4 <= len(body):
            kind, _, length = struct.unpack_from(">BBH", body, position)
            value = body[position + 4 : position + 4 + length]
            if kind == 0x21 and value[0] in by_id:
                self.results[by_id[value[0]]] = value[2]
            elif kind == 0x50 and value[:1] == b"\x51":
                self.max_pdu = struct.unpack_from(">I", value, 4)[0] or MAX_PDU
            position += 4 + length

    def accepted(self, abstract: str, transfer_syntax: str) -> bool:
        return self.results.get((abstract, transfer_syntax)) == 0

    def store(
        self, abstract: str, transfer_syntax: str, sop_instance: str, dataset: bytes
    ) -> Answer:
        """C-STORE `dataset` as is on the context (abstract, transfer syntax)."""
        context_id = self._ids[(abstract, transfer_syntax)]
        self._message_id += 1
        command = c_store_rq(self._message_id, abstract, sop_instance)
        pdus = [p_data(context_id, COMMAND | LAST, command)]
        pdus += data_pdus(context_id, dataset, min(self.max_pdu, MAX_PDU))
        return self._request(b"".join(pdus))

    def command(self, abstract: str, transfer_syntax: str, command: bytes) -> Answer:
        """Send a bare command set (no data set) on the context (abstract, transfer syntax)."""
        context_id = self._ids[(abstract, transfer_syntax)]
        return self._request(p_data(context_id, COMMAND | LAST, command))

    def echo(self) -> Answer:
        context_id = self._ids[(VERIFICATION, IMPLICIT_LE)]
        self._message_id += 1
        return self._request(p_data(context_id, COMMAND | LAST, c_echo_rq(self._message_id)))

    def _request(self, data: bytes) -> Answer:
        try:
            self.sock.sendall(data)
            command = b""
            while True:
                kind, body = read_pdu(self.sock)
                if kind != P_DATA_TF:
                    self.outcome = PDU_NAMES.get(kind, f"PDU type {kind}")
                    return Answer(None, ended_by=self.outcome)
                position = 0
                while position + 6 <= len(body):
                    length, _, control = struct.unpack_from(">IBB", body, position)
                    command += body[position + 6 : position + 4 + length]
                    position += 4 + length
                    if control & COMMAND and control & LAST:
                        elements = parse_command(command)
                        status = struct.unpack("<H", elements.get(0x00000900, b"\xff\xff"))[0]
                        comment = elements.get(0x00000902, b"").decode("latin-1").strip("\0 ")
                        return Answer(status, comment)
        except (Closed, OSError) as exc:
            self.outcome = f"closed: {exc}"
            return Answer(None, ended_by=self.outcome)

    def release(self) -> bool:
        """Release the association; whether the peer answered A-RELEASE-RP."""
        try:
            self.sock.sendall(RELEASE_RQ)
            kind, _ = read_pdu(self.sock)
            return kind == A_RELEASE_RP
        except (Closed, OSError):
            return False
        finally:
            self.sock.close()

    def close(self) -> None:
        self.sock.close()
