"""Who may associate: registered peers only (optionally bound to their address)."""

import logging
from typing import cast

from pynetdicom import evt
from pynetdicom.events import Event

from dicom_node.config import DicomSettings
from dicom_node.metrics import ASSOCIATIONS
from dicom_node.transport import ArchiveAssociation
from storage import Archive, PeerRegistry, Source, StorageError
from storage.scope import EVERYTHING, Scope

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4
CALLING_AE_NOT_RECOGNISED = (0x01, 0x01, 0x03)
CALLED_AE_NOT_RECOGNISED = (0x01, 0x01, 0x07)
TEMPORARY_CONGESTION = (0x02, 0x03, 0x01)
NO_REASON_GIVEN = (0x01, 0x01, 0x01)


def source_of(assoc: ArchiveAssociation) -> Source:
    peer = assoc.peer
    return Source(
        kind="dimse",
        aet=assoc.requestor.ae_title.strip() or None,
        address=assoc.requestor.address,
        hospital=peer.hospital if peer else None,
    )


def scope_of(source: Source) -> Scope:
    """What a peer may find and retrieve: its hospital's studies and those shared with its
    hospital. A peer registered without a hospital is a province-level node (the reading
    centre's workstations, a backup archive) and sees everything."""
    return Scope(hospital=source.hospital) if source.hospital else EVERYTHING


def handle_requested(
    event: Event, archive: Archive, peers: PeerRegistry, settings: DicomSettings
) -> None:
    """EVT_REQUESTED: accept or reject the association before negotiation."""
    assoc = cast(ArchiveAssociation, event.assoc)
    request = assoc.requestor.primitive
    if request is None:  # pynetdicom sets it before EVT_REQUESTED
        return
    calling = str(request.calling_ae_title).strip()
    called = str(request.called_ae_title).strip()
    address = assoc.requestor.address

    reason: str | None = None
    rejection = CALLING_AE_NOT_RECOGNISED
    empty = [
        c.context_id for c in request.presentation_context_definition_list if not c.transfer_syntax
    ]
    if empty:  # pynetdicom's negotiation would fail on it (PS3.8 9.3.2.2 asks for one or more)
        reason = f"presentation context {empty[0]} proposes no transfer syntax"
        rejection = NO_REASON_GIVEN
    elif called != settings.aet:
        reason = f"called AE title {called!r} is not ours ({settings.aet!r})"
        rejection = CALLED_AE_NOT_RECOGNISED
    else:
        try:
            peer = peers.by_aet(calling)
        except StorageError as exc:
            reason, rejection = f"the peer registry cannot be read: {exc}", TEMPORARY_CONGESTION
        else:
            if peer is None and not settings.accept_any_caller:
                reason = (
                    f"calling AE title {calling!r} is not a registered peer "
                    "(register it with 'pacs remote add')"
                )
            elif peer is not None and not peer.accepts_address(address):
                reason = (
                    f"calling AE title {calling!r} is registered for {peer.host}, not for {address}"
                )
            assoc.peer = peer

    if reason is None:
        return
    log.warning(
        "Rejected association from %s (%s) to %s: %s",
        calling,
        address,
        called,
        reason,
        extra={"calling_aet": calling, "peer_address": address},
    )
    ASSOCIATIONS.labels("rejected").inc()
    archive.audit(
        action="association",
        outcome="rejected",
        actor=calling,
        source_address=address,
        detail=reason,
    )
    assoc.acse.send_reject(*rejection)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()


def handle_accepted(event: Event, archive: Archive) -> None:
    assoc = cast(ArchiveAssociation, event.assoc)
    source = source_of(assoc)
    ASSOCIATIONS.labels("accepted").inc()
    log.info(
        "Accepted association from %s (%s)",
        source.aet,
        source.address,
        extra={"calling_aet": source.aet, "peer_address": source.address},
    )
    archive.audit(
        action="association",
        outcome="accepted",
        actor=source.aet,
        source_address=source.address,
        hospital=source.hospital,
    )


def handle_closed(event: Event) -> None:
    """EVT_RELEASED / EVT_ABORTED: one summary line per association."""
    assoc = cast(ArchiveAssociation, event.assoc)
    counts = assoc.counts
    how = "released" if event.event is evt.EVT_RELEASED else "aborted"
    summary = ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "nothing done"
    log.info(
        "Association from %s (%s) %s: %s",
        assoc.requestor.ae_title.strip(),
        assoc.requestor.address,
        how,
        summary,
    )
