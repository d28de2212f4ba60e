"""C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3): stored files sent as they are.

A C-MOVE destination registered with ``--tls`` gets its sub-operations over DICOM TLS; when
that cannot be, the move is answered 0xA801 (the destination cannot be reached) with a log
line saying why, from here (our settings) or from the socket (the handshake).
"""

import logging
from collections.abc import Iterator
from functools import partial
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import build_context
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext

from dicom_node.association import scope_of, source_of
from dicom_node.config import DicomSettings
from dicom_node.contexts import (
    MAX_CONTEXTS,
    PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
    UNCOMPRESSED,
    VERIFICATION,
)
from dicom_node.identifiers import parse_identifier
from dicom_node.metrics import RETRIEVES
from dicom_node.receive import StoredDataset
from dicom_node.statuses import PENDING, query_status, status_dataset
from dicom_node.tls import TlsSettingsError, peer_tls_args
from dicom_node.transport import ArchiveAssociation
from storage import (
    UNIQUE_KEYS,
    Archive,
    InvalidQuery,
    Level,
    PeerRegistry,
    StorageError,
    StoredInstance,
    build_query,
)

log = logging.getLogger(__name__)


def _instances(event: Event, patient_root: bool, archive: Archive) -> list[StoredInstance]:
    """The stored instances a retrieve identifier names by its unique keys, of the studies
    the requesting peer may see (others match nothing, as if absent)."""
    request = parse_identifier(event.identifier, patient_root=patient_root)
    keys = {}
    for level in Level:
        if level.depth > request.level.depth:
            break
        keyword = UNIQUE_KEYS[level]
        if request.keys.get(keyword):
            keys[keyword] = request.keys[keyword]
    if not request.keys.get(UNIQUE_KEYS[request.level]):
        raise InvalidQuery(
            f"a {request.level.value}-level retrieve needs {UNIQUE_KEYS[request.level]}"
        )
    if "IssuerOfPatientID" in request.keys:
        keys["IssuerOfPatientID"] = request.keys["IssuerOfPatientID"]
    scope = scope_of(source_of(cast(ArchiveAssociation, event.assoc)))
    return archive.stored_instances(build_query(request.level, keys, scope=scope))


def _payloads(archive: Archive, instances: list[StoredInstance]) -> Iterator[Dataset]:
    for instance in instances:
        yield StoredDataset(
            partial(archive.blob_file, instance.blob_key),
            sop_class_uid=instance.sop_class_uid,
            sop_instance_uid=instance.sop_instance_uid,
            transfer_syntax_uid=instance.transfer_syntax_uid,
        )


def _contexts_for(instances: list[StoredInstance]) -> list[PresentationContext]:
    """One context per (SOP class, stored syntax), plus the other uncompressed syntax."""
    wanted: dict[tuple[str, str], None] = {}
    for instance in instances:
        wanted[(instance.sop_class_uid, instance.transfer_syntax_uid)] = None
        if instance.transfer_syntax_uid in UNCOMPRESSED:
            for other in UNCOMPRESSED:
                wanted.setdefault((instance.sop_class_uid, other), None)
    contexts = [build_context(sop_class, [syntax]) for sop_class, syntax in wanted]
    if len(contexts) > MAX_CONTEXTS:
        log.warning(
            "A retrieve needs %d presentation contexts; only the first %d are proposed",
            len(contexts),
            MAX_CONTEXTS,
        )
    return contexts[:MAX_CONTEXTS] or [build_context(VERIFICATION)]


def handle_move(
    event: Event, archive: Archive, peers: PeerRegistry, settings: DicomSettings
) -> Iterator[Any]:
    """EVT_C_MOVE: to a registered peer only (unknown destination, or a TLS one our TLS
    settings cannot reach: 0xA801)."""
    assoc = cast(ArchiveAssociation, event.assoc)
    source = source_of(assoc)
    destination_aet = str(event.move_destination or "").strip()
    try:
        destination = peers.by_aet(destination_aet, fresh=True)
    except StorageError as exc:
        log.warning("C-MOVE from %s failed: %s", source.aet, exc.reason)
        destination = None
    if destination is None:
        _refuse_move(archive, source, f"destination {destination_aet!r} is not a registered peer")
        yield None, None
        return
    try:
        tls_args = peer_tls_args(destination, settings)
    except TlsSettingsError as exc:
        _refuse_move(archive, source, f"destination {destination.aet} is a TLS peer, but {exc}")
        yield None, None
        return

    patient_root = cast(C_MOVE, event.request).AffectedSOPClassUID == PATIENT_ROOT_MOVE
    instances, error = _matching(event, patient_root, archive)
    yield (
        destination.host,
        destination.port,
        {
            "contexts": _contexts_for(instances),
            "max_pdu": settings.max_pdu_kb * 1024,
            "tls_args": tls_args,
        },
    )
    yield from _sub_operations(archive, source, instances, error, "C-MOVE", destination.aet)
    assoc.counts["moves"] += 1


def _refuse_move(archive: Archive, source: Any, reason: str) -> None:
    """A C-MOVE answered A801 (no destination to send to): logged and audited, with why."""
    log.warning("Refused C-MOVE from %s (%s): %s", source.aet, source.address, reason)
    archive.audit(
        action="retrieve",
        outcome="refused",
        actor=source.aet,
        source_address=source.address,
        detail=f"C-MOVE refused: {reason}"[:500],
    )


def handle_get(event: Event, archive: Archive) -> Iterator[Any]:
    """EVT_C_GET: sub-operations on the requesting association itself."""
    assoc = cast(ArchiveAssociation, event.assoc)
    source = source_of(assoc)
    patient_root = cast(C_GET, event.request).AffectedSOPClassUID == PATIENT_ROOT_GET
    instances, error = _matching(event, patient_root, archive)
    yield from _sub_operations(archive, source, instances, error, "C-GET", source.aet)
    assoc.counts["gets"] += 1


def _matching(
    event: Event, patient_root: bool, archive: Archive
) -> tuple[list[StoredInstance], StorageError | None]:
    """The instances to send, or none and the reason (answered after the sub-operations)."""
    try:
        return _instances(event, patient_root, archive), None
    except StorageError as exc:
        return [], exc


def _sub_operations(
    archive: Archive,
    source: Any,
    instances: list[StoredInstance],
    error: StorageError | None,
    service: str,
    destination: str | None,
) -> Iterator[Any]:
    if error is not None:
        status = query_status(error)
        log.warning(
            "Refused %s from %s (%s) with 0x%04X: %s",
            service,
            source.aet,
            source.address,
            status,
            error.reason,
        )
        yield 1
        yield status_dataset(status, error.reason), None
        return
    yield len(instances)
    for study in sorted({i.study_instance_uid for i in instances}):
        archive.audit(
            action="retrieve",
            outcome="started",
            actor=source.aet,
            source_address=source.address,
            hospital=source.hospital,
            study_instance_uid=study,
            detail=f"{service} to {destination}",
        )
    RETRIEVES.labels(service).inc(len(instances))
    for payload in _payloads(archive, instances):
        yield PENDING, payload
