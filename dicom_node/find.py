"""C-FIND SCP, Patient Root and Study Root, every level (PS3.4 C.4.1)."""

import logging
import time
from collections.abc import Iterator
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.events import Event

from dicom_node.association import scope_of, source_of
from dicom_node.config import DicomSettings
from dicom_node.contexts import PATIENT_ROOT_FIND
from dicom_node.identifiers import build_response, parse_identifier
from dicom_node.metrics import FIND_SECONDS
from dicom_node.statuses import (
    CANCEL,
    OUT_OF_RESOURCES,
    PENDING,
    query_status,
    status_dataset,
)
from dicom_node.transport import ArchiveAssociation
from storage import Archive, StorageError, build_query, header_datasets

log = logging.getLogger(__name__)

FindYield = tuple[int | Dataset, Dataset | None]


def handle_find(event: Event, archive: Archive, settings: DicomSettings) -> Iterator[FindYield]:
    """EVT_C_FIND: one pending response per match, from the index alone."""
    assoc = cast(ArchiveAssociation, event.assoc)
    source = source_of(assoc)
    started = time.perf_counter()
    patient_root = cast(C_FIND, event.request).AffectedSOPClassUID == PATIENT_ROOT_FIND
    try:
        request = parse_identifier(event.identifier, patient_root=patient_root)
        query = build_query(
            request.level,
            request.keys,
            limit=settings.find_max_results + 1,
            scope=scope_of(source),
        )
        matches = archive.find(query)
        extras: dict[int, Dataset] = {}
        if request.unindexed and matches:
            with archive.read() as conn:
                extras = header_datasets(conn, request.level, [m.pk for m in matches])
    except StorageError as exc:
        status = query_status(exc)
        log.warning(
            "Refused C-FIND from %s (%s) with 0x%04X: %s",
            source.aet,
            source.address,
            status,
            exc.reason,
            extra={"calling_aet": source.aet},
        )
        yield status_dataset(status, exc.reason), None
        return
    if len(matches) > settings.find_max_results:
        reason = f"more than {settings.find_max_results} matches; narrow the query"
        log.warning("Refused C-FIND from %s: %s", source.aet, reason)
        yield status_dataset(OUT_OF_RESOURCES, reason), None
        return

    _audit(archive, source, request.level.value, request.keys, len(matches))
    for match in matches:
        if event.is_cancelled:
            yield CANCEL, None
            return
        yield (
            PENDING,
            build_response(
                request, match.values, extras=extras.get(match.pk), retrieve_aet=settings.aet
            ),
        )
    FIND_SECONDS.labels(request.level.value).observe(time.perf_counter() - started)
    assoc.counts["queries"] += 1


def _audit(archive: Archive, source: Any, level: str, keys: dict[str, Any], count: int) -> None:
    asked = ", ".join(f"{k}={v}" for k, v in keys.items() if v)
    archive.audit(
        action="query",
        outcome="success",
        actor=source.aet,
        source_address=source.address,
        hospital=source.hospital,
        patient_id=keys.get("PatientID"),
        study_instance_uid=keys.get("StudyInstanceUID"),
        detail=f"C-FIND {level} [{asked[:400]}] -> {count} match(es)",
    )
