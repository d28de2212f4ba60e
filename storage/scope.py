"""Which studies one request may see: its scope, as a condition on the ``studies`` table.

A user sees their own hospital's studies and those granted to them: shared with their
hospital or with them, assigned to them for reading, or (for a capability link) put in the
link; a grant names one study or every study of a patient and stops at its expiry or
revocation. The archive's own work (verification, AI triage, the command line) and an
administrator see everything. Every query of the DICOM and HTTP edges carries the scope of
whoever asks, so a study outside it is simply not there: not found, never forbidden.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Connection, exists, false, or_, select, true

from storage.errors import NotFound
from storage.index.tables import Grant, Patient, Study


@dataclass(frozen=True, slots=True)
class Scope:
    everything: bool = False
    hospital: str | None = None
    """The hospital whose own studies are seen (and whose shares count)."""
    user: str | None = None
    """The user whose shares and reading assignments count."""
    link: int | None = None
    """The capability link whose studies are seen."""


EVERYTHING = Scope(everything=True)
NOTHING = Scope()


def visible_studies(scope: Scope, now: datetime | None = None) -> ColumnElement[bool]:
    """The condition a row of ``studies`` meets when `scope` may see it."""
    if scope.everything:
        return true()
    grantees: list[ColumnElement[bool]] = []
    if scope.hospital is not None:
        grantees.append(Grant.hospital == scope.hospital)
    if scope.user is not None:
        grantees.append(Grant.user_name == scope.user)
    if scope.link is not None:
        grantees.append(Grant.link_id == scope.link)
    if not grantees:
        return false()
    now = now or datetime.now(UTC)
    granted = exists().where(
        or_(Grant.study_pk == Study.id, Grant.patient_pk == Study.patient_pk),
        or_(*grantees),
        Grant.revoked_at.is_(None),
        or_(Grant.expires_at.is_(None), Grant.expires_at > now),
    )
    if scope.hospital is None:
        return granted
    return or_(Study.hospital == scope.hospital, granted)


def visible_study(conn: Connection, study_uid: str, scope: Scope) -> int:
    """The key of the study `scope` may see; NotFound otherwise (as if it were absent).

    Raises:
        NotFound: no such study, or not one `scope` may see.
    """
    found = conn.scalar(
        select(Study.id).where(Study.study_instance_uid == study_uid, visible_studies(scope))
    )
    if found is None:
        raise NotFound(f"no study {study_uid}")
    return int(found)


def visible_patients(scope: Scope, now: datetime | None = None) -> ColumnElement[bool]:
    """The condition a row of ``patients`` meets when `scope` may see one of its studies."""
    if scope.everything:
        return true()
    return exists(
        select(Study.id).where(Study.patient_pk == Patient.id, visible_studies(scope, now))
    )


def owned_studies(scope: Scope) -> ColumnElement[bool]:
    """The studies `scope` may grant to others: its hospital's own (or any, for everything)."""
    if scope.everything:
        return true()
    if scope.hospital is None:
        return false()
    return Study.hospital == scope.hospital
