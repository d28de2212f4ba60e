"""Storage Commitment requests (PS3.4 Annex J), kept in the index until answered.

A request is recorded before the N-ACTION is acknowledged, so it survives a restart. It
is answered by re-hashing every referenced instance's blob against the digest taken at
receipt: an instance is committed only if its bytes are still the bytes that arrived.

Several processes (listener workers, archive nodes) may serve one index. Each request is
leased to one of them (``claimed_by`` until ``claimed_until``): first to the process that
received it, which may still hold the requesting association; to any other once the lease
has run out, if that process died.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import Connection, and_, insert, select, update

from storage.archive import Archive
from storage.errors import StorageError
from storage.index.tables import CommitmentRequest, Instance
from storage.processes import is_dead, process_identity

MAX_ATTEMPTS = 10
LEASE = timedelta(seconds=60)
UPLOAD_WAIT = timedelta(hours=1)
"""How long a report waits for instances still on their way to S3 before failing them."""


class FailureReason(StrEnum):
    NO_SUCH_INSTANCE = "no-such-instance"
    CLASS_INSTANCE_CONFLICT = "class-instance-conflict"
    CORRUPT = "corrupt"  # the blob is missing or no longer matches its digest
    NOT_UPLOADED = "not-uploaded"  # still only on one node's disk when the wait ran out


@dataclass(frozen=True, slots=True)
class PendingCommitment:
    id: int
    transaction_uid: str
    calling_aet: str
    address: str | None
    items: list[tuple[str, str]]
    attempts: int
    claimed_by: str | None = None
    received_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CommitmentResult:
    committed: list[tuple[str, str]]
    failed: list[tuple[str, str, FailureReason]]
    uploading: int = 0
    """Instances still on their way from this node's spool to S3: ask again later."""


def _aware(moment: datetime) -> datetime:
    """SQLite returns timestamps without their (UTC) zone."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class DuplicateTransaction(StorageError):
    """A commitment request reuses a Transaction UID already recorded."""


class Commitments:
    def __init__(self, archive: Archive, owner: str | None = None) -> None:
        self._archive = archive
        self.owner = owner or process_identity()

    def record(
        self,
        *,
        transaction_uid: str,
        calling_aet: str,
        address: str | None,
        items: list[tuple[str, str]],
    ) -> None:
        """Durably record a request (raises DuplicateTransaction, StorageUnavailable)."""

        def write(conn: Connection, now: datetime) -> None:
            exists = conn.scalar(
                select(CommitmentRequest.id).where(
                    CommitmentRequest.transaction_uid == transaction_uid
                )
            )
            if exists is not None:
                raise DuplicateTransaction(f"Transaction UID {transaction_uid} was already used")
            conn.execute(
                insert(CommitmentRequest).values(
                    transaction_uid=transaction_uid,
                    calling_aet=calling_aet,
                    address=address,
                    items=json.dumps(items),
                    state="pending",
                    attempts=0,
                    next_attempt_at=now,
                    received_at=now,
                    claimed_by=self.owner,
                    claimed_until=now + LEASE,
                )
            )

        self._archive.run_write(write)

    def due(self, limit: int = 16) -> list[PendingCommitment]:
        """Requests ready for an attempt that this process holds, or may take over."""
        now = datetime.now(UTC)
        with self._archive.read() as conn:
            rows = conn.execute(
                select(CommitmentRequest)
                .where(
                    CommitmentRequest.state == "pending",
                    CommitmentRequest.next_attempt_at <= now,
                )
                .order_by(CommitmentRequest.id)
                .limit(limit * 4)
            ).all()
        rows = [
            row
            for row in rows
            if row.claimed_by == self.owner
            or _aware(row.claimed_until) < now
            or is_dead(row.claimed_by)
        ][:limit]
        return [
            PendingCommitment(
                id=row.id,
                transaction_uid=row.transaction_uid,
                calling_aet=row.calling_aet,
                address=row.address,
                items=[(i[0], i[1]) for i in json.loads(row.items)],
                attempts=row.attempts,
                claimed_by=row.claimed_by,
                received_at=_aware(row.received_at),
            )
            for row in rows
        ]

    def claim(self, request: PendingCommitment) -> bool:
        """Take (or renew) the lease on `request` from the owner :meth:`due` saw.

        False if another process changed hands first, or holds a live lease.
        """
        previous = request.claimed_by
        takeover = previous != self.owner and is_dead(previous)

        def write(conn: Connection, now: datetime) -> bool:
            same_owner = (
                CommitmentRequest.claimed_by.is_(None)
                if previous is None
                else CommitmentRequest.claimed_by == previous
            )
            allowed = (
                same_owner
                if previous == self.owner or takeover
                else and_(same_owner, CommitmentRequest.claimed_until < now)
            )
            taken = conn.execute(
                update(CommitmentRequest)
                .where(
                    CommitmentRequest.id == request.id,
                    CommitmentRequest.state == "pending",
                    allowed,
                )
                .values(claimed_by=self.owner, claimed_until=now + LEASE)
            )
            return bool(taken.rowcount == 1)

        return bool(self._archive.run_write(write))

    def evaluate(
        self, items: list[tuple[str, str]], *, stop_waiting: bool = False
    ) -> CommitmentResult:
        """Which instances the archive commits to: present, of that class, bytes intact, and
        in the shared blob store (with `stop_waiting`, those still uploading fail)."""
        uids = [uid for _, uid in items]
        stored: dict[str, tuple[str, str, str]] = {}
        with self._archive.read() as conn:
            for start in range(0, len(uids), 500):
                chunk = uids[start : start + 500]
                for row in conn.execute(
                    select(
                        Instance.sop_instance_uid,
                        Instance.sop_class_uid,
                        Instance.blob_key,
                        Instance.sha256,
                    ).where(Instance.sop_instance_uid.in_(chunk))
                ):
                    stored[row.sop_instance_uid] = (row.sop_class_uid, row.blob_key, row.sha256)
        committed: list[tuple[str, str]] = []
        failed: list[tuple[str, str, FailureReason]] = []
        uploading = 0
        for sop_class, sop_instance in items:
            found = stored.get(sop_instance)
            if found is None:
                failed.append((sop_class, sop_instance, FailureReason.NO_SUCH_INSTANCE))
            elif found[0] != sop_class:
                failed.append((sop_class, sop_instance, FailureReason.CLASS_INSTANCE_CONFLICT))
            elif self._archive.blob_pending(found[1]):
                if stop_waiting:
                    failed.append((sop_class, sop_instance, FailureReason.NOT_UPLOADED))
                else:
                    uploading += 1
            elif not self._archive.blob_matches(found[1], found[2]):
                failed.append((sop_class, sop_instance, FailureReason.CORRUPT))
            else:
                committed.append((sop_class, sop_instance))
        return CommitmentResult(committed, failed, uploading)

    def mark_done(self, request_id: int) -> None:
        self._set(request_id, state="done", completed_at=datetime.now(UTC), last_error=None)

    def defer(self, request: PendingCommitment, seconds: float) -> None:
        """Look at `request` again in `seconds`, keeping its lease and its attempts."""
        next_attempt = datetime.now(UTC) + timedelta(seconds=seconds)
        self._set(request.id, next_attempt_at=next_attempt, claimed_until=next_attempt + LEASE)

    def mark_retry(self, request: PendingCommitment, error: str) -> bool:
        """Schedule another attempt with backoff; False when the attempts are used up."""
        attempts = request.attempts + 1
        if attempts >= MAX_ATTEMPTS:
            self._set(request.id, state="failed", attempts=attempts, last_error=error)
            return False
        delay = timedelta(seconds=min(600, 5 * 2 ** (attempts - 1)))
        next_attempt = datetime.now(UTC) + delay
        self._set(  # the lease lasts through the wait, so the retry stays with this process
            request.id,
            attempts=attempts,
            last_error=error,
            next_attempt_at=next_attempt,
            claimed_until=next_attempt + LEASE,
        )
        return True

    def _set(self, request_id: int, **values: object) -> None:
        def write(conn: Connection, _now: datetime) -> None:
            conn.execute(
                update(CommitmentRequest).where(CommitmentRequest.id == request_id).values(**values)
            )

        self._archive.run_write(write)
