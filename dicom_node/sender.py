"""Sending files to a registered peer as a storage SCU, over one association: for exports
(de-identified studies to a research PACS, say). Each file goes as it is on disk, streamed
by pynetdicom, its pixel data never decoded; TCP_NODELAY is set on the socket. A peer
registered with ``--tls`` is sent to over DICOM TLS, or not at all."""

import logging
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from pynetdicom.association import Association
from pynetdicom.presentation import build_context

from dicom_node.config import DicomSettings
from dicom_node.contexts import MAX_CONTEXTS
from dicom_node.tls import TlsSettingsError, peer_tls_args
from dicom_node.transport import ArchiveAE, tls_failure_of
from storage import Peer

log = logging.getLogger(__name__)


class SendFailed(Exception):
    """The peer could not be reached, refused the association, or dropped it; or it is a
    TLS peer and our TLS settings cannot be used."""


class PeerSender:
    """One association to `peer` offering `kinds` (SOP class, transfer syntax) pairs, as
    ``settings.aet`` and, to a TLS peer, with ``settings``' TLS files."""

    def __init__(
        self,
        peer: Peer,
        kinds: Iterable[tuple[str, str]],
        *,
        settings: DicomSettings,
        timeout: float = 60,
    ) -> None:
        self.peer = peer
        self._settings = settings
        self._ae = ArchiveAE(ae_title=settings.aet)
        self._ae.acse_timeout = self._ae.dimse_timeout = self._ae.network_timeout = timeout
        self._ae.connection_timeout = timeout
        wanted = list(dict.fromkeys(kinds))
        if len(wanted) > MAX_CONTEXTS:
            raise SendFailed(f"{len(wanted)} kinds of instance are more than one association holds")
        self._ae.requested_contexts = [build_context(sop, [syntax]) for sop, syntax in wanted]
        self._assoc: Association | None = None

    def __enter__(self) -> "PeerSender":
        peer = self.peer
        try:
            tls_args = peer_tls_args(peer, self._settings)
        except TlsSettingsError as exc:
            raise SendFailed(f"{peer.aet} is a TLS peer, but {exc}") from None
        assoc = self._ae.associate(peer.host, peer.port, ae_title=peer.aet, tls_args=tls_args)
        if not assoc.is_established:
            where = f"{peer.aet} at {peer.host}:{peer.port}"
            if why := tls_failure_of(assoc):
                raise SendFailed(f"no TLS association with {where}: {why}")
            raise SendFailed(
                f"{where} did not accept an association (unreachable, or it refused our AE title)"
            )
        self._assoc = assoc
        return self

    def send(self, path: Path) -> int:
        """C-STORE the file at `path`; the peer's status (0 is success).

        Raises:
            SendFailed: the association broke, or no context fits the file.
        """
        assert self._assoc is not None
        if not self._assoc.is_established:
            raise SendFailed(f"the association with {self.peer.aet} was lost")
        try:
            answer = self._assoc.send_c_store(path)
        except (ValueError, RuntimeError) as exc:  # no accepted context for it
            raise SendFailed(str(exc)) from None
        if "Status" not in answer:
            raise SendFailed(f"{self.peer.aet} did not answer the C-STORE")
        return int(answer.Status)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._assoc is not None:
            if self._assoc.is_established:
                self._assoc.release()
            self._assoc = None
