"""Radiology reports in the index: a draft saved as the radiologist types, and each signed
state (preliminary, final, amended) kept for ever as a version with its canonical content
and signature. Only the radiologist holding the study on the worklist writes its report.

Status transitions: a draft becomes preliminary or final; a preliminary report becomes
final; a final report is only ever amended (with a reason), which makes a new version.
"""

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from storage.archive import Archive, write_audit
from storage.errors import ReportConflict
from storage.index.tables import Patient, Reading, Report, ReportVersion, Series, Study
from storage.scope import Scope, visible_study

SIGNED = ("preliminary", "final", "amended")


@dataclass(frozen=True, slots=True)
class StudyContext:
    """What a report needs to know of its study."""

    study_pk: int
    study: dict[str, Any]
    """Study and patient attributes from the index (column names)."""
    body_parts: tuple[str, ...]
    reading_status: str
    claimed_by: str | None
    claimed_until: datetime | None


@dataclass(frozen=True, slots=True)
class Version:
    """A signed version of a report, as recorded (and as `add_version` records it)."""

    version: int
    """Numbered from 1; a new one takes the number after the last (else a conflict)."""
    status: str
    content: str
    content_sha256: str
    signature: bytes | None
    signer: str | None
    signed_by: str
    signed_at: datetime
    reason: str | None
    pdf_sop_instance_uid: str | None
    sr_sop_instance_uid: str | None


_VERSION_FIELDS = tuple(field.name for field in dataclasses.fields(Version))


@dataclass(frozen=True, slots=True)
class ReportState:
    template: str
    language: str
    status: str
    """draft (nothing signed yet) or the last version's status."""
    author: str
    draft: str | None
    """The unsigned content (JSON) being written, if any."""
    draft_saved_at: datetime | None
    versions: tuple[Version, ...]


def next_status(current: str, wanted: str, reason: str | None) -> str:
    """The status a signing makes, from the report's `current` one.

    Raises:
        ReportConflict: a final report signed as preliminary; an amendment without reason.
    """
    if current in ("final", "amended"):
        if wanted == "preliminary":
            raise ReportConflict("a final report can only be amended, not made preliminary")
        if not (reason and reason.strip()):
            raise ReportConflict("an amendment to a final report needs a reason")
        return "amended"
    return wanted


def study_context(archive: Archive, study_uid: str, scope: Scope) -> StudyContext:
    """Raises NotFound: `scope` may not see the study."""
    with archive.read() as conn:
        return _context(conn, study_uid, scope)


def _context(conn: Connection, study_uid: str, scope: Scope) -> StudyContext:
    study_pk = visible_study(conn, study_uid, scope)
    row = conn.execute(
        select(
            Study.study_instance_uid,
            Study.study_date,
            Study.study_time,
            Study.study_description,
            Study.accession_number,
            Study.modalities_in_study,
            Study.referring_physician_name,
            Study.hospital,
            Study.created_at,
            Patient.patient_id,
            Patient.patient_name,
            Patient.issuer,
            Patient.birth_date,
            Patient.sex,
            Reading.status.label("reading_status"),
            Reading.claimed_by,
            Reading.claimed_until,
        )
        .join(Patient, Patient.id == Study.patient_pk)
        .outerjoin(Reading, Reading.study_pk == Study.id)
        .where(Study.id == study_pk)
    ).one()
    parts = conn.execute(
        select(Series.body_part_examined)
        .where(Series.study_pk == study_pk, Series.body_part_examined.is_not(None))
        .distinct()
    ).scalars()
    values = dict(row._mapping)
    return StudyContext(
        study_pk=study_pk,
        study={
            k: v
            for k, v in values.items()
            if k not in ("reading_status", "claimed_by", "claimed_until")
        },
        body_parts=tuple(sorted(p for p in parts if p)),
        reading_status=values["reading_status"] or "unread",
        claimed_by=values["claimed_by"],
        claimed_until=values["claimed_until"],
    )


def report_state(archive: Archive, study_uid: str, scope: Scope) -> ReportState | None:
    """The study's report, none if nobody started one.

    Raises NotFound: `scope` may not see the study.
    """
    with archive.read() as conn:
        study_pk = visible_study(conn, study_uid, scope)
        return _state(conn, study_pk)


def _state(conn: Connection, study_pk: int) -> ReportState | None:
    report = conn.execute(select(Report.__table__).where(Report.study_pk == study_pk)).one_or_none()
    if report is None:
        return None
    versions = conn.execute(
        select(ReportVersion.__table__)
        .where(ReportVersion.report_id == report.id)
        .order_by(ReportVersion.version)
    )
    return ReportState(
        template=report.template,
        language=report.language,
        status=report.status,
        author=report.author,
        draft=report.draft,
        draft_saved_at=report.draft_saved_at,
        versions=tuple(
            Version(**{name: getattr(v, name) for name in _VERSION_FIELDS}) for v in versions
        ),
    )


def check_holder(context: StudyContext, writer: str) -> None:
    """Raises ReportConflict unless `writer` holds the study now (checked again when the
    version is recorded: this is for refusing before any work is done)."""
    _check_holder(context, writer, datetime.now(UTC))


def _check_holder(context: StudyContext, writer: str, now: datetime) -> None:
    held = context.claimed_until is not None and context.claimed_until > now
    if not held or context.claimed_by != writer:
        holder = f"{context.claimed_by} holds it" if held else "nobody holds it"
        raise ReportConflict(f"claim the study on the worklist to write its report ({holder})")


def save_draft(
    archive: Archive,
    study_uid: str,
    scope: Scope,
    writer: str,
    *,
    template: str,
    language: str,
    draft: str,
) -> datetime:
    """Keep the draft `writer` is typing; when it was saved.

    Raises:
        NotFound: `scope` may not see the study.
        ReportConflict: the signer does not hold the study.
    """

    def write(conn: Connection, now: datetime) -> datetime:
        context = _context(conn, study_uid, scope)
        _check_holder(context, writer, now)
        values = {
            "template": template,
            "language": language,
            "draft": draft,
            "draft_saved_at": now,
            "updated_at": now,
        }
        changed = conn.execute(
            update(Report).where(Report.study_pk == context.study_pk).values(**values)
        ).rowcount
        if not changed:
            conn.execute(
                insert(Report).values(
                    study_pk=context.study_pk,
                    status="draft",
                    author=writer,
                    created_at=now,
                    **values,
                )
            )
        return now

    return archive.run_write(write)


def add_version(
    archive: Archive,
    study_uid: str,
    scope: Scope,
    new: Version,
    *,
    role: str | None = None,
    source_address: str | None = None,
) -> None:
    """Record a version signed by `new.signed_by`: the report and the worklist take its
    status, the draft is done with, and a final or amended report lets the study go. Audited.

    Raises:
        NotFound: `scope` may not see the study.
        ReportConflict: the signer does not hold the study, or another version was signed
            since `new.version` was chosen.
    """

    def write(conn: Connection, now: datetime) -> None:
        context = _context(conn, study_uid, scope)
        _check_holder(context, new.signed_by, now)
        report = conn.execute(
            select(Report.id, Report.status).where(Report.study_pk == context.study_pk)
        ).one_or_none()
        if report is None:
            raise ReportConflict("the report has no draft to sign")
        last = conn.execute(
            select(func.max(ReportVersion.version)).where(ReportVersion.report_id == report.id)
        ).scalar_one()
        if (last or 0) + 1 != new.version:
            raise ReportConflict(f"version {last} was signed meanwhile; reload the report")
        try:
            conn.execute(
                insert(ReportVersion).values(report_id=report.id, **dataclasses.asdict(new))
            )
        except IntegrityError:
            raise ReportConflict("another version was signed meanwhile; reload") from None
        conn.execute(
            update(Report)
            .where(Report.id == report.id)
            .values(status=new.status, draft=None, draft_saved_at=None, updated_at=now)
        )
        done = new.status != "preliminary"
        conn.execute(
            update(Reading)
            .where(Reading.study_pk == context.study_pk)
            .values(
                status=new.status,
                updated_at=now,
                **({"claimed_by": None, "claimed_until": None} if done else {}),
            )
        )
        write_audit(
            conn,
            now,
            action="report-signed",
            actor=new.signed_by,
            role=role,
            source_address=source_address,
            hospital=context.study["hospital"],
            patient_id=context.study["patient_id"],
            study_instance_uid=study_uid,
            detail=f"version {new.version} {new.status}"
            + (f" signed by {new.signer}" if new.signer else ""),
        )

    archive.run_write(write)
