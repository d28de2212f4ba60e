"""Storage Commitment Push Model SCP (PS3.4 Annex J).

The N-ACTION is acknowledged only once its request is recorded in the index, so a restart
loses nothing. A sender thread then re-hashes every referenced instance and delivers the
N-EVENT-REPORT: on the requesting association while it is still open, otherwise on a new
association to the registered peer (the archive proposing the SCP role; over DICOM TLS
to a peer registered with ``--tls``), retried with backoff until it is taken.
"""

import logging
import threading
import time
import weakref
from datetime import UTC, datetime
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom import build_context, build_role
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_ACTION
from pynetdicom.events import Event
from pynetdicom.fsm import InvalidEventError

from dicom_node.association import source_of
from dicom_node.config import DicomSettings
from dicom_node.contexts import (
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH,
    UNCOMPRESSED,
)
from dicom_node.statuses import (
    COMMITMENT_FAILURE_REASONS,
    INVALID_ARGUMENT_VALUE,
    NO_SUCH_ACTION_TYPE,
    PROCESSING_FAILURE,
    SUCCESS,
    status_dataset,
)
from dicom_node.tls import TlsSettingsError, peer_tls_args
from dicom_node.transport import ArchiveAE, ArchiveAssociation, tls_failure_of
from storage import Commitments, PeerRegistry, PendingCommitment, StorageError
from storage.commitments import UPLOAD_WAIT, DuplicateTransaction
from storage.uids import uid_problem

log = logging.getLogger(__name__)

SAME_ASSOCIATION_GRACE = 0.2
"""Seconds after the N-ACTION before the requesting association is used for the report."""
REQUEST_STORAGE_COMMITMENT = 1


class CommitmentSender:
    """Delivers N-EVENT-REPORTs for recorded commitment requests."""

    def __init__(
        self, commitments: Commitments, peers: PeerRegistry, settings: DicomSettings
    ) -> None:
        self._commitments = commitments
        self._peers = peers
        self._settings = settings
        self._live: dict[str, tuple[weakref.ref[Association], float]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commitment-sender", daemon=True)
        self._ae = ArchiveAE(ae_title=settings.aet)
        self._ae.acse_timeout = settings.acse_timeout
        self._ae.dimse_timeout = settings.dimse_timeout
        self._ae.network_timeout = settings.network_timeout
        self._ae.connection_timeout = settings.acse_timeout

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def remember(self, transaction_uid: str, assoc: Association) -> None:
        """The association a request came on, to answer on while the modality waits there."""
        self._live[transaction_uid] = (weakref.ref(assoc), time.monotonic())
        self._wake.set()

    def _waiting(self, transaction_uid: str) -> Association | None:
        """The requesting association, if the modality is still waiting on it.

        A modality that wants the report on a new association releases within milliseconds
        of the N-ACTION response; sending into that release makes pynetdicom abort. So the
        association is used only after a grace period, and only while in Sta6 (established,
        nothing else under way).
        """
        remembered = self._live.pop(transaction_uid, None)
        if remembered is None:
            return None
        reference, since = remembered
        delay = SAME_ASSOCIATION_GRACE - (time.monotonic() - since)
        if delay > 0:
            time.sleep(delay)
        assoc = reference()
        if assoc is None or not assoc.is_established:
            return None
        if assoc.dul.state_machine.current_state != "Sta6":
            return None
        return assoc

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for request in self._commitments.due():
                    if self._stop.is_set():
                        return
                    if self._commitments.claim(request):
                        self._deliver(request)
            except StorageError as exc:
                log.error("Storage commitment: cannot read pending requests: %s", exc)
            except Exception:  # the sender must outlive any one request
                log.exception("Storage commitment sender failed; it will try again")
            self._wake.wait(self._settings.commitment_retry_seconds)
            self._wake.clear()

    def _deliver(self, request: PendingCommitment) -> None:
        received = request.received_at or datetime.now(UTC)
        waited_enough = datetime.now(UTC) - received > UPLOAD_WAIT
        result = self._commitments.evaluate(request.items, stop_waiting=waited_enough)
        if result.uploading:
            log.info(
                "Storage commitment %s for %s waits for %d instances to reach S3",
                request.transaction_uid,
                request.calling_aet,
                result.uploading,
            )
            self._commitments.defer(request, self._settings.commitment_retry_seconds)
            return
        report = Dataset()
        report.TransactionUID = request.transaction_uid
        report.ReferencedSOPSequence = [_reference(c, i) for c, i in result.committed]
        if result.failed:
            report.FailedSOPSequence = [
                _reference(c, i, COMMITMENT_FAILURE_REASONS[reason])
                for c, i, reason in result.failed
            ]
        event_type = 2 if result.failed else 1
        error = self._send(request, report, event_type)
        if error is None:
            self._commitments.mark_done(request.id)
            log.info(
                "Storage commitment %s for %s: %d committed, %d failed",
                request.transaction_uid,
                request.calling_aet,
                len(result.committed),
                len(result.failed),
            )
        elif not self._commitments.mark_retry(request, error):
            log.error(
                "Storage commitment %s for %s abandoned after repeated failures: %s",
                request.transaction_uid,
                request.calling_aet,
                error,
            )
        else:
            log.warning(
                "Storage commitment %s for %s not delivered yet: %s",
                request.transaction_uid,
                request.calling_aet,
                error,
            )

    def _send(self, request: PendingCommitment, report: Dataset, event_type: int) -> str | None:
        """Send the report; return None on success, else why it failed."""
        live = self._waiting(request.transaction_uid)
        if live is not None:
            try:
                status, _ = live.send_n_event_report(
                    report, event_type, STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_INSTANCE
                )
                if status and status.get("Status") == SUCCESS:
                    return None
            except (RuntimeError, ValueError, InvalidEventError) as exc:
                log.info(
                    "Storage commitment %s: the requesting association is gone (%s)",
                    request.transaction_uid,
                    exc,
                )
        peer = self._peers.by_aet(request.calling_aet, fresh=True)
        if peer is None:
            return f"{request.calling_aet} is not a registered peer, so it cannot be reached"
        try:
            tls_args = peer_tls_args(peer, self._settings)
        except TlsSettingsError as exc:
            return f"{peer.aet} is a TLS peer, but {exc}"
        assoc = self._ae.associate(
            peer.host,
            peer.port,
            contexts=[build_context(STORAGE_COMMITMENT_PUSH, UNCOMPRESSED)],
            ae_title=peer.aet,
            ext_neg=[build_role(STORAGE_COMMITMENT_PUSH, scp_role=True)],
            tls_args=tls_args,
        )
        if not assoc.is_established:
            where = f"no association with {peer.aet} at {peer.host}:{peer.port}"
            why = tls_failure_of(assoc)
            return f"{where}: {why}" if why else where
        try:
            status, _ = assoc.send_n_event_report(
                report, event_type, STORAGE_COMMITMENT_PUSH, STORAGE_COMMITMENT_INSTANCE
            )
        finally:
            assoc.release()
        if not status or status.get("Status") != SUCCESS:
            code = status.get("Status") if status else None
            return f"{peer.aet} answered the N-EVENT-REPORT with {code!r}"
        return None


def _reference(sop_class: str, sop_instance: str, failure: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if failure is not None:
        item.FailureReason = failure
    return item


def handle_n_action(
    event: Event, commitments: Commitments, sender: CommitmentSender
) -> tuple[int | Dataset, Dataset | None]:
    """EVT_N_ACTION: record a Request Storage Commitment before acknowledging it."""
    assoc = cast(ArchiveAssociation, event.assoc)
    source = source_of(assoc)
    if cast(N_ACTION, event.request).ActionTypeID != REQUEST_STORAGE_COMMITMENT:
        return NO_SUCH_ACTION_TYPE, None
    try:
        info = event.action_information
        transaction_uid = str(info.TransactionUID).strip("\0 ")
        items = [
            (
                str(item.ReferencedSOPClassUID).strip("\0 "),
                str(item.ReferencedSOPInstanceUID).strip("\0 "),
            )
            for item in info.ReferencedSOPSequence
        ]
    except (AttributeError, ValueError, TypeError, KeyError) as exc:
        log.warning("Refused storage commitment from %s: unreadable request (%s)", source.aet, exc)
        return status_dataset(INVALID_ARGUMENT_VALUE, "unreadable Action Information"), None
    problem = uid_problem(transaction_uid) or (None if items else "names no instance")
    if problem:
        log.warning("Refused storage commitment from %s: Transaction UID %s", source.aet, problem)
        return status_dataset(INVALID_ARGUMENT_VALUE, f"Transaction UID {problem}"), None
    try:
        commitments.record(
            transaction_uid=transaction_uid,
            calling_aet=source.aet or "",
            address=source.address,
            items=items,
        )
    except DuplicateTransaction:
        log.info("Storage commitment %s from %s was already requested", transaction_uid, source.aet)
        return SUCCESS, None
    except StorageError as exc:
        log.error(
            "Storage commitment %s from %s not recorded: %s", transaction_uid, source.aet, exc
        )
        return status_dataset(PROCESSING_FAILURE, exc.reason), None
    log.info(
        "Storage commitment %s from %s recorded for %d instance(s)",
        transaction_uid,
        source.aet,
        len(items),
    )
    sender.remember(transaction_uid, assoc)
    return SUCCESS, None
