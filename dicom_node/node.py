"""The DICOM listener: an AE with the archive's handlers, on guarded servers.

One server on ``PACS_DICOM_PORT`` and, when ``PACS_TLS_PORT`` is set, one speaking TLS
(``dicom_node.tls``). Both belong to one AE, so ``PACS_MAX_ASSOCIATIONS`` counts the
associations of both.
"""

import logging
import ssl
import threading
from typing import cast

from pynetdicom import evt
from pynetdicom.events import EventHandlerType

from dicom_node import receive
from dicom_node.association import handle_accepted, handle_closed, handle_requested
from dicom_node.commitment import CommitmentSender, handle_n_action
from dicom_node.config import DicomSettings
from dicom_node.contexts import supported_contexts
from dicom_node.find import handle_find
from dicom_node.retrieve import handle_get, handle_move
from dicom_node.store import handle_store
from dicom_node.tls import listener_context
from dicom_node.transport import ArchiveAE, ArchiveServer
from storage import Archive, Commitments, PeerRegistry
from storage.staging import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

log = logging.getLogger(__name__)


def _echo(_event: evt.Event) -> int:
    return 0x0000


class DicomNode:
    """Runs the archive's DIMSE services on ``host:settings.dicom_port`` (and on
    ``settings.tls_port`` over TLS) until stopped."""

    def __init__(
        self, archive: Archive, settings: DicomSettings, *, host: str, reuse_port: bool = False
    ) -> None:
        self.archive = archive
        self.reuse_port = reuse_port
        self.settings = settings
        self.host = host
        self.peers = PeerRegistry(archive.engine)
        self.commitments = Commitments(archive)
        self.sender = CommitmentSender(self.commitments, self.peers, settings)
        self._server: ArchiveServer | None = None
        self._tls_server: ArchiveServer | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        if self._server is None:
            raise RuntimeError("the DICOM node is not started")
        return int(self._server.server_address[1])

    @property
    def tls_port(self) -> int | None:
        """The bound TLS port, or None without ``PACS_TLS_PORT``."""
        if self._tls_server is None:
            return None
        return int(self._tls_server.server_address[1])

    def _ae(self) -> ArchiveAE:
        settings = self.settings
        ae = ArchiveAE(ae_title=settings.aet)
        ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        ae.maximum_pdu_size = settings.max_pdu_kb * 1024
        ae.maximum_associations = settings.max_associations
        ae.acse_timeout = settings.acse_timeout
        ae.dimse_timeout = settings.dimse_timeout
        ae.network_timeout = settings.network_timeout
        # For the C-MOVE destination's TCP connection and TLS handshake: without it, a TLS
        # peer that accepts but never answers holds the move, and the SCU waiting, for ever.
        ae.connection_timeout = settings.acse_timeout
        ae.require_called_aet = True
        # One by one: the ``supported_contexts`` setter would drop the SCP/SCU roles.
        for context in supported_contexts(accept_deflated=self.archive.settings.accept_deflated):
            ae.add_supported_context(
                cast(str, context.abstract_syntax),
                context.transfer_syntax,
                scu_role=context.scu_role,
                scp_role=context.scp_role,
            )
        return ae

    def start(self) -> None:
        """Listen; a TLS file that cannot be used raises TlsSettingsError before any port opens."""
        receive.install()
        archive, settings, peers = self.archive, self.settings, self.peers
        tls_context = listener_context(settings)
        handlers: list[EventHandlerType] = [
            (evt.EVT_REQUESTED, handle_requested, [archive, peers, settings]),
            (evt.EVT_ACCEPTED, handle_accepted, [archive]),
            (evt.EVT_RELEASED, handle_closed),
            (evt.EVT_ABORTED, handle_closed),
            (evt.EVT_C_ECHO, _echo),
            (evt.EVT_C_STORE, handle_store, [archive]),
            (evt.EVT_C_FIND, handle_find, [archive, settings]),
            (evt.EVT_C_MOVE, handle_move, [archive, peers, settings]),
            (evt.EVT_C_GET, handle_get, [archive]),
            (evt.EVT_N_ACTION, handle_n_action, [self.commitments, self.sender]),
        ]
        ae = self._ae()
        self._server = self._serve(ae, settings.dicom_port, handlers)
        log.info("DICOM listener %s on %s:%d", settings.aet, self.host, self.port)
        if tls_context is not None and settings.tls_port is not None:
            try:
                self._tls_server = self._serve(ae, settings.tls_port, handlers, tls_context)
            except OSError:  # the port is taken: nothing stays half started
                self._server.shutdown()
                self._server = None
                raise
            log.info(
                "DICOM TLS listener %s on %s:%d (client certificate %s)",
                settings.aet,
                self.host,
                self.tls_port,
                tls_context.verify_mode.name.removeprefix("CERT_").lower(),
            )
        self.sender.start()

    def _serve(
        self,
        ae: ArchiveAE,
        port: int,
        handlers: list[EventHandlerType],
        ssl_context: ssl.SSLContext | None = None,
    ) -> ArchiveServer:
        """A server on `port`, serving on a thread of its own."""
        server = cast(
            ArchiveServer,
            ae.make_server(
                (self.host, port),
                evt_handlers=handlers,
                ssl_context=ssl_context,
                server_class=ArchiveServer,
                staging_dir=self.archive.staging_dir,
                max_connections_per_address=self.settings.max_connections_per_address,
                read_timeout=self.settings.network_timeout,
                reuse_port=self.reuse_port,
            ),
        )
        kind = "tls-listener" if ssl_context is not None else "listener"
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"dicom-{kind}-{self.settings.aet}",
            daemon=True,
        ).start()
        return server

    def stop(self) -> None:
        for server in (self._server, self._tls_server):
            if server is not None:
                server.shutdown()
                for assoc in server.active_associations:
                    assoc.abort()
        self._server = self._tls_server = None
        self.sender.stop()
