"""The DICOM listener: an AE with the archive's handlers, on a guarded server."""

import logging
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
from dicom_node.transport import ArchiveAE, ArchiveServer
from storage import Archive, Commitments, PeerRegistry
from storage.staging import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

log = logging.getLogger(__name__)


def _echo(_event: evt.Event) -> int:
    return 0x0000


class DicomNode:
    """Runs the archive's DIMSE services on ``host:settings.dicom_port`` until stopped."""

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
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        if self._server is None:
            raise RuntimeError("the DICOM node is not started")
        return int(self._server.server_address[1])

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
        receive.install()
        archive, settings, peers = self.archive, self.settings, self.peers
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
        server = cast(
            ArchiveServer,
            self._ae().make_server(
                (self.host, settings.dicom_port),
                evt_handlers=handlers,
                server_class=ArchiveServer,
                staging_dir=archive.staging_dir,
                max_connections_per_address=settings.max_connections_per_address,
                read_timeout=settings.network_timeout,
                reuse_port=self.reuse_port,
            ),
        )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"dicom-listener-{settings.aet}",
            daemon=True,
        )
        self._thread.start()
        self.sender.start()
        log.info("DICOM listener %s on %s:%d", settings.aet, self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            for assoc in self._server.active_associations:
                assoc.abort()
            self._server = None
        self.sender.stop()
