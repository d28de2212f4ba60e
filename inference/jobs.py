"""Inference jobs in the index: made from the outbox when a study has gone quiet, taken by
one worker at a time (a lease), finished with a state and a reason.

A job covers a study as far as the outbox had reached (``up_to_seq``); instances that
arrive later make a new job. The unique key (study, model, version, ``up_to_seq``) makes
creating a job idempotent, whichever node or process notices the quiet study first.
"""

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
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
LEASE = timedelta(seconds=60)
"""How long a claim holds without renewal; a worker renews it while its model runs, so a
worker that dies loses its jobs to others within this time."""
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


def queue_quiet_studies(archive: Archive, model: str, version: str, quiet: timedelta) -> list[int]:
    """Make a job for every study whose last instance arrived more than `quiet` ago and
    that `model` has not covered yet; return the new jobs' ids."""
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
    made: list[int] = []
    for study, last_seq in due:

        def make(conn: Connection, at: datetime, study: str = study, seq: int = last_seq) -> int:
            try:
                with conn.begin_nested():
                    done = conn.execute(
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
                return 0  # another process made it first
            key = done.inserted_primary_key
            assert key is not None
            return int(key[0])

        if job_id := archive.run_write(make):
            made.append(job_id)
    return made


def claim_next(archive: Archive, models: Sequence[str], owner: str) -> Job | None:
    """Take the oldest queued job of one of `models`, or a running one whose worker's lease
    ran out or whose worker (a process of this host) is dead, killed mid-job."""
    with archive.read() as conn:
        rows = conn.execute(
            select(*_JOB_COLUMNS, InferenceJob.claimed_until)
            .where(
                InferenceJob.model.in_(models),
                InferenceJob.state.in_(("queued", "running")),
            )
            .order_by(InferenceJob.id)
            .limit(32)
        ).all()
    return _take(archive, _takeable(rows), owner)


def claim(archive: Archive, job_id: int, owner: str) -> Job | None:
    """Take job `job_id` if it is queued or its worker is gone; None if it is finished or
    another live worker has it."""
    with archive.read() as conn:
        rows = conn.execute(
            select(*_JOB_COLUMNS, InferenceJob.claimed_until).where(
                InferenceJob.id == job_id, InferenceJob.state.in_(("queued", "running"))
            )
        ).all()
    return _take(archive, _takeable(rows), owner)


def stale(archive: Archive, models: Sequence[str], older: timedelta) -> list[Job]:
    """Jobs that no worker is on: queued for longer than `older` (their message lost), or
    running under a lease that ran out. The dispatcher sends them to the queue again."""
    now = datetime.now(UTC)
    with archive.read() as conn:
        rows = conn.execute(
            select(*_JOB_COLUMNS, InferenceJob.claimed_until, InferenceJob.updated_at)
            .where(
                InferenceJob.model.in_(models),
                InferenceJob.state.in_(("queued", "running")),
            )
            .order_by(InferenceJob.id)
            .limit(256)
        ).all()
    return [
        Job(**{f.name: getattr(row, f.name) for f in fields(Job)})
        for row in rows
        if (row.state == "queued" and _aware(row.updated_at) < now - older)
        or (row.state == "running" and (is_dead(row.claimed_by) or _aware(row.claimed_until) < now))
    ]


def renew(archive: Archive, job: Job, owner: str) -> bool:
    """Extend `owner`'s claim on `job`; False if the job is no longer its own."""

    def write(conn: Connection, at: datetime) -> bool:
        done = conn.execute(
            update(InferenceJob)
            .where(
                InferenceJob.id == job.id,
                InferenceJob.state == "running",
                InferenceJob.claimed_by == owner,
            )
            .values(claimed_until=at + LEASE)
        )
        return bool(done.rowcount == 1)

    return archive.run_write(write)


def _takeable(rows: Sequence[Any]) -> list[Job]:
    now = datetime.now(UTC)
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
    return candidates


def _take(archive: Archive, candidates: list[Job], owner: str) -> Job | None:
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
            return replace(job, state="running", attempts=job.attempts + 1, claimed_by=owner)
    return None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def finish(archive: Archive, job: Job, state: str, **values: Any) -> bool:
    """Record how `job` ended: done, failed or skipped, with its reason and results; only
    while the claim is still this run's (the same worker and attempt). False: another
    worker took the job over meanwhile, and its word stands."""

    def write(conn: Connection, at: datetime) -> bool:
        done = conn.execute(
            update(InferenceJob)
            .where(_still_ours(job))
            .values(state=state, claimed_until=None, updated_at=at, **values)
        )
        return bool(done.rowcount == 1)

    return archive.run_write(write)


def release(archive: Archive, job: Job) -> bool:
    """Give `job` back to the queue unfinished (its worker is stopping)."""

    def write(conn: Connection, at: datetime) -> bool:
        done = conn.execute(
            update(InferenceJob)
            .where(_still_ours(job))
            .values(state="queued", claimed_by=None, claimed_until=None, updated_at=at)
        )
        return bool(done.rowcount == 1)

    return archive.run_write(write)


def _still_ours(job: Job) -> Any:
    return (
        (InferenceJob.id == job.id)
        & (InferenceJob.state == "running")
        & (InferenceJob.claimed_by == job.claimed_by)
        & (InferenceJob.attempts == job.attempts)
    )
