"""The listener's sockets: guards that act before a peer's bytes are buffered.

pynetdicom reads a PDU by trusting the length in its header. :class:`GuardedSocket` checks
that length first (an A-ASSOCIATE-RQ may not exceed 64 KiB, a P-DATA-TF our maximum PDU),
so a peer that declares 4 GiB is disconnected after six bytes, before any association and
before any AE-title check. :class:`ArchiveServer` caps TCP connections per address, sets
TCP_NODELAY on every accepted socket (without it Nagle's algorithm and delayed ACKs stall
each C-STORE response), and puts a read timeout on it.

On the TLS port the same server wraps each accepted socket without handshaking, and
:class:`ArchiveRequestHandler` runs the handshake in the connection's own thread, after the
per-address cap has counted it: a peer that stalls its handshake holds up no one else, and
one that fails it is logged and closed, never reaching pynetdicom. The guards then act on
the decrypted stream as they do on a plain one.
"""

import contextlib
import logging
import socket
import socketserver
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.transport import (
    AddressInformation,
    AssociationSocket,
    RequestHandler,
    ThreadedAssociationServer,
)

from dicom_node.reactors import ArchiveDUL, WakingQueue, run_acceptor_reactor
from dicom_node.receive import discard_staged, discard_unfinished
from dicom_node.responses import ArchiveDIMSE
from dicom_node.tls import RequestorTlsSocket, describe_session, handshake_failure
from storage import Peer

log = logging.getLogger(__name__)

MAX_ASSOCIATE_PDU = 64 * 1024
"""Largest association-negotiation (or release/abort) PDU accepted."""

_P_DATA_TF = 0x04
_PDU_TYPES = frozenset(range(0x01, 0x08))
"""A-ASSOCIATE-RQ to A-ABORT (PS3.8 9.3)."""
_RECV_CHUNK = 256 * 1024


def _close(sock: socket.socket | None) -> None:
    """Shut down and close; pynetdicom's version skips close() when shutdown() fails."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class RequestorSocket(AssociationSocket):
    """The socket of an association we request: TCP_NODELAY, closed even if refused, and a
    failed TLS handshake logged with the reason (pynetdicom's own log has only OpenSSL's)."""

    tls_failure: str | None = None
    """Why the TLS handshake failed, if it did."""

    def _create_socket(self, address: AddressInformation) -> socket.socket:
        sock = super()._create_socket(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _shutdown_socket(self) -> None:
        # pynetdicom calls this as it gives up on a connection whose handshake failed.
        sock = self.socket
        if isinstance(sock, RequestorTlsSocket) and sock.handshake_error is not None:
            self.tls_failure = handshake_failure(sock.handshake_error, requested=True)
            sock.handshake_error = None
            acceptor = self.assoc.acceptor
            log.warning(
                "Could not open a TLS association to %s at %s:%d: %s",
                acceptor.ae_title,
                acceptor.address,
                acceptor.port,
                self.tls_failure,
                extra={"called_aet": acceptor.ae_title, "peer_address": acceptor.address},
            )
        _close(sock)


def tls_failure_of(assoc: Association) -> str | None:
    """Why the TLS handshake of an association we requested failed, or None."""
    sock = assoc.dul.socket
    return sock.tls_failure if isinstance(sock, RequestorSocket) else None


class ArchiveAE(AE):
    """The archive's AE: associations it requests (C-MOVE, commitment reports, exports) use
    :class:`RequestorSocket`."""

    def _create_socket(
        self,
        assoc: Association,
        address: AddressInformation,
        tls_args: tuple[ssl.SSLContext, str] | None,
    ) -> AssociationSocket:
        sock = RequestorSocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock


_ANSWERED = (C_STORE, C_FIND, C_GET, C_MOVE)
"""Requests refused with 0xC000 when they lack a required field."""


class ArchiveAssociation(Association):
    """An association accepted by the archive, with what the handlers need to know of it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._activity = threading.Event()
        self.dul = ArchiveDUL(self, self.wake)
        # The timeouts were set on the DUL just replaced; they live in its timers.
        self.acse_timeout = self.acse_timeout
        self.network_timeout = self.network_timeout
        self.dimse = ArchiveDIMSE(self)
        self.dimse.msg_queue = WakingQueue(self.wake)
        self.peer: Peer | None = None
        """The registered peer that called, once the request was checked."""
        self.staging_dir: Path | None = None
        """Where C-STORE datasets received on this association are written."""
        self.counts: Counter[str] = Counter()
        """What happened on the association (stored, refused...), for its summary line."""

    def wake(self) -> None:
        """Something for the association thread: a message, a release or abort, an end."""
        self._activity.set()

    def run_reactor(self) -> None:
        try:
            self._run_association()
        finally:
            if dropped := discard_unfinished(self):
                log.info(
                    "Dropped %d dataset(s) the association from %s (%s) ended in the middle of",
                    dropped,
                    self.requestor.ae_title.strip(),
                    self.requestor.address,
                )

    def _run_association(self) -> None:
        try:
            super().run_reactor()
        except Exception as exc:  # a request pynetdicom fails to negotiate, say
            log.warning(
                "Aborted the association from %s (%s): %s",
                self.requestor.ae_title.strip(),
                self.requestor.address,
                exc,
                extra={"peer_address": self.requestor.address},
            )
            with contextlib.suppress(Exception):
                self.abort()
            sock = self.dul.socket
            if self._server is not None and sock is not None and sock.socket is not None:
                self._server.shutdown_request(sock.socket)  # else it stays open, and counted

    def _serve_request(self, msg: Any, context_id: int) -> None:
        # pynetdicom ignores a request that lacks a required field (an empty Affected SOP
        # Instance UID, a C-FIND without its SOP Class UID...) without answering, and the peer
        # waits out its DIMSE timeout. Refused here with 0xC000 (cannot understand, or
        # unable to process: PS3.4 B.2.3, C.4).
        if isinstance(msg, _ANSWERED) and not msg.is_valid_request and not self._sent_release:
            self._refuse_invalid(msg, context_id)
            return
        super()._serve_request(msg, context_id)

    def _refuse_invalid(self, msg: C_STORE | C_FIND | C_GET | C_MOVE, context_id: int) -> None:
        # Imported here: the counters must not be made before `pacs serve` points
        # PROMETHEUS_MULTIPROC_DIR at its folder, and the CLI imports this module early.
        from dicom_node.metrics import STORES

        kind = msg.msg_type.replace("_", "-")
        if isinstance(msg, C_STORE):
            discard_staged(cast(Path | None, msg._dataset_path))
        missing = [k for k in msg.REQUEST_KEYWORDS if getattr(msg, k, None) is None]
        if msg.MessageID is None:  # nothing to answer to
            log.warning(
                "Aborted the association from %s: a %s request without a Message ID",
                self.requestor.ae_title,
                kind,
            )
            self.abort()
            return
        reason = f"the {kind} request lacks {', '.join(missing)}"
        log.warning(
            "Refused %s from %s (%s) with 0xC000: %s",
            kind,
            self.requestor.ae_title,
            self.requestor.address,
            reason,
            extra={"calling_aet": self.requestor.ae_title, "status": 0xC000},
        )
        response = type(msg)()
        if isinstance(msg, C_STORE) and isinstance(response, C_STORE):
            STORES.labels("0xC000").inc()
            self.counts["refused"] += 1
            response.AffectedSOPInstanceUID = msg.AffectedSOPInstanceUID
        response.MessageIDBeingRespondedTo = msg.MessageID
        response.AffectedSOPClassUID = msg.AffectedSOPClassUID
        response.Status = 0xC000
        response.ErrorComment = reason[:64]  # type: ignore[assignment]  # typed None there
        self.dimse.send_msg(response, context_id)

    def _run_reactor(self) -> None:
        run_acceptor_reactor(self, self._activity)

    def kill(self) -> None:
        self._kill = True
        self.wake()
        super().kill()


class GuardedSocket(AssociationSocket):
    """An accepted socket that refuses PDUs longer than the limits before reading them."""

    def __init__(self, assoc: Association, client_socket: socket.socket, max_pdu: int) -> None:
        super().__init__(assoc, client_socket=client_socket)
        self._max_p_data = max_pdu + 6
        self._at_header = True

    def recv(self, nr_bytes: int) -> bytearray:
        # pynetdicom's DUL reads each PDU as recv(6) for the header, then recv(length).
        if not self._at_header:
            self._at_header = True
            return self._recv_exactly(nr_bytes)
        header = self._recv_exactly(nr_bytes)
        if nr_bytes == 6 and len(header) == 6:
            pdu_type, _, length = struct.unpack(">BBL", header)
            if pdu_type not in _PDU_TYPES:
                # pynetdicom would skip reading its body and take the body's first bytes
                # for the next PDU's header, whose length is then anybody's guess.
                address = self.assoc.requestor.address
                log.warning(
                    "Closed the connection from %s: unknown PDU type 0x%02X",
                    address,
                    pdu_type,
                    extra={"peer_address": address},
                )
                self._drop()
                return bytearray()
            limit = self._max_p_data if pdu_type == _P_DATA_TF else MAX_ASSOCIATE_PDU
            if length > limit:
                address = self.assoc.requestor.address
                log.warning(
                    "Closed the connection from %s: a PDU of type 0x%02X declares %d bytes, "
                    "more than the %d accepted",
                    address,
                    pdu_type,
                    length,
                    limit,
                    extra={"peer_address": address, "pdu_length": length},
                )
                self._drop()
                return bytearray()  # the DUL sees a closed transport (Evt17)
            self._at_header = False
        return header

    def _recv_exactly(self, nr_bytes: int) -> bytearray:
        sock = cast(socket.socket, self.socket)
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        received = 0
        while received < nr_bytes:
            count = sock.recv_into(view[received:], min(nr_bytes - received, _RECV_CHUNK))
            if count == 0:
                del view
                return buffer[:received]
            received += count
        return buffer

    def _shutdown_socket(self) -> None:
        _close(self.socket)

    def _drop(self) -> None:
        sock = self.socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class ArchiveRequestHandler(RequestHandler):
    """Creates an :class:`ArchiveAssociation` on a :class:`GuardedSocket` per connection."""

    server: "ArchiveServer"

    def handle(self) -> None:
        if isinstance(self.request, ssl.SSLSocket) and not self._handshake(self.request):
            return
        super().handle()

    def _handshake(self, sock: ssl.SSLSocket) -> bool:
        """The TLS handshake, within the ACSE timeout; False (and closed) if it failed."""
        server = self.server
        read_timeout = sock.gettimeout()
        sock.settimeout(self.ae.acse_timeout or read_timeout)
        try:
            with server.handshaking(sock):
                sock.do_handshake()
        except (OSError, ValueError) as exc:  # ssl.SSLError and TimeoutError are OSErrors
            if not server.stopping:
                host = str(self.client_address[0])
                log.warning(
                    "Refused a TLS connection from %s: %s",
                    host,
                    handshake_failure(exc),
                    extra={"peer_address": host},
                )
            _close(sock)
            return False
        if server.stopping:
            _close(sock)
            return False
        sock.settimeout(read_timeout)
        log.debug("TLS connection from %s: %s", self.client_address[0], describe_session(sock))
        return True

    def _create_association(self) -> Association:
        server = self.server
        assoc = ArchiveAssociation(self.ae, "acceptor")
        assoc._server = server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.staging_dir = server.staging_dir
        assoc.set_socket(GuardedSocket(assoc, self.request, self.ae.maximum_pdu_size))

        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        # Negotiation only reads these, so they are shared: pynetdicom's deepcopy of the
        # 178 contexts took 24 ms of every association.
        assoc.acceptor.supported_contexts = list(server.contexts)
        assoc.requestor.address_info = self.remote

        for event, handlers in server._handlers.items():
            if event.is_intervention and handlers:
                assoc.bind(event, *handlers)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in cast(list[tuple[Any, Any]], handlers):
                    assoc.bind(event, handler, args)
        return assoc


class ArchiveServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with per-address caps and socket options."""

    request_queue_size = 128  # socketserver's 5 drops connections when modalities arrive together

    def __init__(
        self,
        *args: Any,
        staging_dir: Path,
        max_connections_per_address: int,
        read_timeout: float,
        reuse_port: bool = False,
        **kwargs: Any,
    ) -> None:
        self.staging_dir = staging_dir
        self._reuse_port = reuse_port
        self._per_address = max_connections_per_address
        self._read_timeout = read_timeout
        self._open: dict[int, tuple[str, socket.socket]] = {}
        self._lock = threading.Lock()
        self._last_refusal_log: dict[str, float] = {}
        self.stopping = False
        self._handshaking: set[socket.socket] = set()
        kwargs.setdefault("request_handler", ArchiveRequestHandler)
        super().__init__(*args, **kwargs)
        # A connection's thread may be in a TLS handshake for up to the ACSE timeout: stopping
        # does not wait for it but cuts the handshake short (see `handshaking`).
        self.daemon_threads = self.ssl_context is not None

    def shutdown(self) -> None:
        """Stop serving and close the socket (the server was made, not started, by the AE)."""
        self.stopping = True
        socketserver.BaseServer.shutdown(self)
        with self._lock:
            for sock in self._handshaking:  # its thread sees the end of the stream and returns
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the TCP socket, not TLS
        self.server_close()

    @contextlib.contextmanager
    def handshaking(self, sock: socket.socket) -> Iterator[None]:
        """While `sock` is in its TLS handshake, :meth:`shutdown` may cut it short."""
        with self._lock:
            self._handshaking.add(sock)
        try:
            yield
        finally:
            with self._lock:
                self._handshaking.discard(sock)

    def server_bind(self) -> None:
        if self._reuse_port:  # several listener processes share the port; the kernel spreads
            cast(socket.socket, self.socket).setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = cast(socket.socket, self.socket).accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.settimeout(self._read_timeout)
        if self.ssl_context is not None:
            # Not pynetdicom's wrap, which handshakes here in the one accepting thread.
            try:
                client = self.ssl_context.wrap_socket(
                    client, server_side=True, do_handshake_on_connect=False
                )
            except OSError:
                client.close()
                raise
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        host = str(client_address[0])
        with self._lock:
            # A connection counts while its socket is open, however the association ended.
            self._open = {k: v for k, v in self._open.items() if v[1].fileno() != -1}
            refuse = self._count(host) >= self._per_address
            if not refuse:
                self._open[id(request)] = (host, request)
        if refuse:
            now = time.monotonic()
            if now - self._last_refusal_log.get(host, 0.0) > 60:
                self._last_refusal_log[host] = now
                log.warning(
                    "Refused a connection from %s: it already has %d open "
                    "(PACS_MAX_CONNECTIONS_PER_ADDRESS)",
                    host,
                    self._per_address,
                    extra={"peer_address": host},
                )
        return not refuse

    def _count(self, host: str) -> int:
        return sum(1 for open_host, _ in self._open.values() if open_host == host)

    def open_connections(self, host: str) -> int:
        with self._lock:
            return sum(1 for h, sock in self._open.values() if h == host and sock.fileno() != -1)
