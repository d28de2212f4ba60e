"""C-STORE SCP: every storage SOP class, stored as received (PS3.4 Annex B)."""

import logging
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from dicom_node.association import source_of
from dicom_node.metrics import STORED_BYTES, STORES
from dicom_node.receive import take_staged
from dicom_node.statuses import SUCCESS, status_dataset, store_status
from dicom_node.transport import ArchiveAssociation
from storage import Archive, Outcome, StorageError

log = logging.getLogger(__name__)


def handle_store(event: Event, archive: Archive) -> int | Dataset:
    """EVT_C_STORE: answer success only once the instance is durable and indexed."""
    assoc = cast(ArchiveAssociation, event.assoc)
    request = cast(C_STORE, event.request)
    sop_class = str(request.AffectedSOPClassUID or "").strip("\0 ")
    sop_instance = str(request.AffectedSOPInstanceUID or "").strip("\0 ")
    source = source_of(assoc)
    try:
        staged = take_staged(event.dataset_path)
        result = archive.store(staged, source=source, expected=(sop_class, sop_instance))
    except StorageError as exc:
        status = store_status(exc)
        log.warning(
            "Refused C-STORE of %s from %s (%s) with 0x%04X: %s",
            sop_instance,
            source.aet,
            source.address,
            status,
            exc.reason,
            extra={
                "calling_aet": source.aet,
                "peer_address": source.address,
                "sop_instance_uid": sop_instance,
                "status": status,
            },
        )
        STORES.labels(f"0x{status:04X}").inc()
        assoc.counts["refused"] += 1
        return status_dataset(status, exc.reason)
    STORES.labels("0x0000").inc()
    if result.outcome is Outcome.STORED:
        STORED_BYTES.inc(result.size)
    assoc.counts[result.outcome.value] += 1
    return SUCCESS
