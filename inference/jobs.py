"""Inference jobs in the index: made from the outbox when a study has gone quiet, taken by
one worker at a time (a lease), finished with a state and a reason.

A job covers a study as far as the outbox had reached (``up_to_seq``); instances that
arrive later make a new job. The unique key (study, model, version, ``up_to_seq``) makes
creating a job idempotent, whichever node or process notices the quiet study first.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from storage import Archive
from storage.index.tables import Change, InferenceJob
from storage.processes import is_dead

_JOB_COLUMNS = (
    InferenceJob.id,
    InferenceJob.study_instance_uid,
    InferenceJob.model,
    InferenceJob.model_version,
    InferenceJob.up_to_seq,
    InferenceJob.state,
    InferenceJob.attempts,
    InferenceJob.claimed_by,
)
LEASE = timedelta(minutes=10)
LOOKBACK = timedelta(days=7)
"""Only studies with instances stored in this window are considered (bounds the scan)."""
TRIGGERING = ("stored", "replaced")


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    study_instance_uid: str
    model: str
    model_version: str
    up_to_seq: int
    state: str
    attempts: int
    claimed_by: str | None = None


def queue_quiet_studies(archive: Archive, model: str, version: str, quiet: timedelta) -> int:
    """Make a job for every study whose last instance arrived more than `quiet` ago and
    that `model` has not covered yet; return how many were made."""
    now = datetime.now(UTC)
    last = (
        select(
            Change.study_instance_uid.label("study"),
            func.max(Change.seq).label("last_seq"),
            func.max(Change.at).label("last_at"),
        )
        .where(Change.kind.in_(TRIGGERING), Change.at >= now - LOOKBACK)
        .group_by(Change.study_instance_uid)
        .subquery()
    )
    covered = exists().where(
        InferenceJob.study_instance_uid == last.c.study,
        InferenceJob.model == model,
        InferenceJob.model_version == version,
        InferenceJob.up_to_seq >= last.c.last_seq,
    )
    with archive.read() as conn:
        due = conn.execute(
            select(last.c.study, last.c.last_seq).where(last.c.last_at <= now - quiet, ~covered)
        ).all()
    made = 0
    for study, last_seq in due:

        def make(conn: Connection, at: datetime, study: str = study, seq: int = last_seq) -> bool:
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(InferenceJob).values(
                            study_instance_uid=study,
                            model=model,
                            model_version=version,
                            up_to_seq=seq,
                            state="queued",
                            attempts=0,
                            created_at=at,
                            updated_at=at,
                        )
                    )
            except IntegrityError:
                return False  # another process made it first
            return True

        made += bool(archive.run_write(make))
    return made


def claim_next(archive: Archive, model: str, owner: str) -> Job | None:
    """Take the oldest queued job of `model`, or a running one whose worker's lease ran out
    or whose worker (a process of this host) is dead, killed mid-job."""
    now = datetime.now(UTC)
    with archive.read() as conn:
        rows = conn.execute(
            select(*_JOB_COLUMNS, InferenceJob.claimed_until)
            .where(
                InferenceJob.model == model,
                InferenceJob.state.in_(("queued", "running")),
            )
            .order_by(InferenceJob.id)
            .limit(32)
        ).all()
    candidates = []
    for row in rows:
        values = dict(row._mapping)
        until = values.pop("claimed_until")
        if (
            values["state"] == "queued"
            or is_dead(values["claimed_by"])
            or (until is not None and _aware(until) < now)
        ):
            candidates.append(Job(**values))
    for job in candidates:

        def take(conn: Connection, at: datetime, job: Job = job) -> bool:
            taken = conn.execute(
                update(InferenceJob)
                .where(
                    InferenceJob.id == job.id,
                    InferenceJob.state == job.state,
                    InferenceJob.attempts == job.attempts,
                )
                .values(
                    state="running",
                    attempts=job.attempts + 1,
                    claimed_by=owner,
                    claimed_until=at + LEASE,
                    updated_at=at,
                )
            )
            return bool(taken.rowcount == 1)

        if archive.run_write(take):
            return job
    return None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def finish(archive: Archive, job: Job, state: str, **values: Any) -> None:
    """Record how `job` ended: done, failed or skipped, with its reason and results."""

    def write(conn: Connection, at: datetime) -> None:
        conn.execute(
            update(InferenceJob)
            .where(InferenceJob.id == job.id)
            .values(state=state, claimed_until=None, updated_at=at, **values)
        )

    archive.run_write(write)


def recent(archive: Archive, limit: int = 50) -> list[Any]:
    """The newest jobs, every column, newest first."""
    table = InferenceJob.__table__
    with archive.read() as conn:
        return list(conn.execute(select(table).order_by(table.c.id.desc()).limit(limit)))
