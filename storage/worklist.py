"""The radiologists' worklist: the studies a reader may see, the dangerous ones first.

Order: the studies still to read before those read (final or amended); among those to
read, the ones an AI model flagged, by the flag's severity (critical, then urgent, then any
other) and the model's score, then the rest; within each, the longest waiting first.
Each study's reading status (unread until someone claims it) and its claim: a radiologist
who opens a study holds it for a while (others see it locked, with the holder's name), and
a claim that is not renewed runs out, so a study is never stuck with someone who left.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Subquery, case, func, insert, select, update

from storage.archive import Archive
from storage.errors import AlreadyClaimed
from storage.index.tables import InferenceJob, Patient, Reading, Series, Study
from storage.scope import Scope, visible_studies, visible_study

STATUSES = ("unread", "in-progress", "preliminary", "final", "amended")
CLAIM = timedelta(minutes=30)
"""How long a claim holds without being renewed."""
DONE = ("final", "amended")
"""Reading statuses of studies read: they go below those still to read."""
_SEVERITY_RANK = {"critical": 3, "urgent": 2}
_SEVERITY_NAMES = {3: "critical", 2: "urgent", 1: "flagged"}


@dataclass(frozen=True, slots=True)
class Filters:
    hospital: str | None = None
    modality: str | None = None
    body_part: str | None = None
    date_from: str | None = None
    """StudyDate from, YYYYMMDD."""
    date_to: str | None = None
    status: str | None = None
    claimed_by: str | None = None


def worklist(
    archive: Archive, scope: Scope, filters: Filters, *, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """The studies `scope` may see that match `filters`, in reading order."""
    now = datetime.now(UTC)
    status = func.coalesce(Reading.status, "unread")
    to_read = status.not_in(DONE)
    # Only the flags of studies still to read are ranked: the work stays that of the
    # backlog, not of every flag ever raised.
    flags = _flags(to_read)
    held = case((Reading.claimed_until > now, Reading.claimed_by), else_=None)
    query = (
        select(
            Study.study_instance_uid,
            Study.study_date,
            Study.study_description,
            Study.accession_number,
            Study.modalities_in_study,
            Study.hospital,
            Study.created_at.label("received_at"),
            Patient.patient_name,
            Patient.patient_id,
            status.label("status"),
            held.label("claimed_by"),
            case((Reading.claimed_until > now, Reading.claimed_until), else_=None).label(
                "claimed_until"
            ),
            flags.c.finding.label("ai_finding"),
            flags.c.model.label("ai_model"),
            flags.c.score.label("ai_score"),
            _severity(flags.c.rank).label("ai_severity"),
        )
        .join(Patient, Patient.id == Study.patient_pk)
        .outerjoin(Reading, Reading.study_pk == Study.id)
        .outerjoin(flags, flags.c.uid == Study.study_instance_uid)
        .where(visible_studies(scope, now))
    )
    if filters.hospital:
        query = query.where(Study.hospital == filters.hospital)
    if filters.modality:
        query = query.where(Study.modalities_in_study.contains(filters.modality.upper()))
    if filters.date_from:
        query = query.where(Study.study_date >= filters.date_from)
    if filters.date_to:
        query = query.where(Study.study_date <= filters.date_to)
    if filters.status:
        query = query.where(status == filters.status)
    if filters.claimed_by:
        query = query.where(held == filters.claimed_by)
    if filters.body_part:
        query = query.where(
            select(Series.id)
            .where(
                Series.study_pk == Study.id, Series.body_part_examined == filters.body_part.upper()
            )
            .exists()
        )
    query = query.order_by(
        case((to_read, 0), else_=1),  # what is read goes below what is still to read
        func.coalesce(flags.c.rank, 0).desc(),
        func.coalesce(flags.c.score, 0).desc(),
        Study.created_at,
        Study.id,
    )
    with archive.read() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query.limit(limit).offset(offset))]
        done = [row["study_instance_uid"] for row in rows if row["status"] in DONE]
        if done:  # their flags, for the record, looked up for this page only
            by_uid = {row["study_instance_uid"]: row for row in rows}
            for flag in conn.execute(select(_flags(Study.study_instance_uid.in_(done)))):
                by_uid[flag.uid].update(
                    ai_finding=flag.finding,
                    ai_model=flag.model,
                    ai_score=flag.score,
                    ai_severity=_SEVERITY_NAMES.get(flag.rank),
                )
    return rows


def _flags(where: ColumnElement[bool]) -> Subquery:
    """Per study (``uid``) of those `where` selects (over Study and Reading): the highest
    flag's severity rank, score, finding and model of its flagged AI jobs."""
    return (
        select(
            InferenceJob.study_instance_uid.label("uid"),
            func.max(
                case(
                    *(
                        (InferenceJob.severity == name, rank)
                        for name, rank in _SEVERITY_RANK.items()
                    ),
                    else_=1,
                )
            ).label("rank"),
            func.max(InferenceJob.score).label("score"),
            func.max(InferenceJob.finding).label("finding"),
            func.max(InferenceJob.model).label("model"),
        )
        .join(Study, Study.study_instance_uid == InferenceJob.study_instance_uid)
        .outerjoin(Reading, Reading.study_pk == Study.id)
        .where(InferenceJob.flagged.is_(True), where)
        .group_by(InferenceJob.study_instance_uid)
        .subquery()
    )


def _severity(rank: Any) -> Any:
    return case(*((rank == value, name) for value, name in _SEVERITY_NAMES.items()), else_=None)


def claim(archive: Archive, study_uid: str, reader: str, scope: Scope) -> datetime:
    """Hold the study for `reader` (or renew their hold); until when.

    Raises:
        NotFound: `scope` may not see the study.
        AlreadyClaimed: someone else holds it.
    """

    def write(conn: Connection, now: datetime) -> datetime:
        study_pk = visible_study(conn, study_uid, scope)
        until = now + CLAIM
        row = conn.execute(
            select(Reading.id, Reading.status, Reading.claimed_by, Reading.claimed_until).where(
                Reading.study_pk == study_pk
            )
        ).first()
        if row is None:
            conn.execute(
                insert(Reading).values(
                    study_pk=study_pk,
                    status="in-progress",
                    claimed_by=reader,
                    claimed_until=until,
                    updated_at=now,
                )
            )
            return until
        if row.claimed_by not in (None, reader) and row.claimed_until and row.claimed_until > now:
            raise AlreadyClaimed(
                f"{row.claimed_by} is reading this study (until {row.claimed_until:%H:%M} UTC)"
            )
        status = "in-progress" if row.status == "unread" else row.status
        conn.execute(
            update(Reading)
            .where(Reading.id == row.id)
            .values(status=status, claimed_by=reader, claimed_until=until, updated_at=now)
        )
        return until

    return archive.run_write(write)


def release(archive: Archive, study_uid: str, reader: str, scope: Scope) -> None:
    """Let go of a study `reader` holds (nothing if they do not)."""

    def write(conn: Connection, now: datetime) -> None:
        study_pk = visible_study(conn, study_uid, scope)
        conn.execute(
            update(Reading)
            .where(Reading.study_pk == study_pk, Reading.claimed_by == reader)
            .values(claimed_by=None, claimed_until=None, updated_at=now)
        )

    archive.run_write(write)
