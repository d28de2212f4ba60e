"""Grants beyond a user's own hospital, and capability links; each one audited.

A share gives a hospital or a user a study (or every study of its patient) until an
expiry; a reading assignment gives a radiologist a study to read; a capability link gives
whoever holds its token a set of studies, read-only, until it expires or is revoked. Only
the study's own hospital (or an administrator, whose scope is everything) may grant it,
and only the granter's hospital (or an administrator) may revoke. A link's token is shown
once; the index keeps its SHA-256, so a copy of the database does not hold usable links
(it holds the token signing secret, unless PACS_TOKEN_SECRET is kept outside it).
"""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, Select, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from storage.archive import Archive, write_audit
from storage.errors import InvalidGrant, NotFound
from storage.index.tables import Grant, Link, Patient, SigningKey, Study
from storage.scope import Scope, owned_studies, visible_study

Purpose = Literal["share", "reading"]
LINK_PREFIX = "pacs-link-"
"""Capability link tokens start so: told apart from a JWT at a glance, and by scanners."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who grants or revokes: for the audit row and the ownership check."""

    name: str
    role: str | None
    hospital: str | None
    scope: Scope
    source_address: str | None = None


@dataclass(frozen=True, slots=True)
class GrantRow:
    id: int
    study_instance_uid: str
    whole_patient: bool
    hospital: str | None
    user_name: str | None
    purpose: str
    expires_at: datetime | None
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class ValidLink:
    id: int
    label: str
    expires_at: datetime


def grant(
    archive: Archive,
    study_uid: str,
    *,
    by: Actor,
    hospital: str | None = None,
    user: str | None = None,
    purpose: Purpose = "share",
    expires_at: datetime | None = None,
    whole_patient: bool = False,
) -> int:
    """Give `hospital` or `user` the study (or all its patient's studies); its id.

    Raises:
        NotFound: no such study that `by` owns (someone else's study is not there).
        InvalidGrant: no grantee or both, or an expiry in the past.
    """
    if (hospital is None) == (user is None):
        raise InvalidGrant("a grant goes to one hospital or one user")
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise InvalidGrant("the expiry is in the past")

    def write(conn: Connection, now: datetime) -> int:
        study_pk, patient_pk, patient_id = _owned_study(conn, study_uid, by.scope)
        grant_id = conn.execute(
            insert(Grant)
            .values(
                study_pk=None if whole_patient else study_pk,
                patient_pk=patient_pk if whole_patient else None,
                hospital=hospital,
                user_name=user,
                purpose=purpose,
                expires_at=expires_at,
                created_by=by.name,
                created_at=now,
            )
            .returning(Grant.id)
        ).scalar_one()
        until = expires_at.isoformat() if expires_at else "no expiry"
        what = "the patient's studies" if whole_patient else "the study"
        _audit(
            conn,
            now,
            by,
            f"{purpose} grant {grant_id}: {what} to {hospital or user} until {until}",
            patient_id=patient_id,
            study_uid=study_uid,
        )
        return int(grant_id)

    return archive.run_write(write)


def revoke_grant(archive: Archive, grant_id: int, *, by: Actor) -> None:
    """Stop a grant now: the study's own hospital (any of its staff who may share) or an
    administrator may.

    Raises:
        NotFound: no such grant that `by` may revoke.
    """

    def write(conn: Connection, now: datetime) -> None:
        row = conn.execute(
            _grants_select().where(Grant.id == grant_id, owned_studies(by.scope))
        ).first()
        if row is None:
            raise NotFound(f"no grant {grant_id}")
        conn.execute(
            update(Grant)
            .where(Grant.id == grant_id, Grant.revoked_at.is_(None))
            .values(revoked_at=now, revoked_by=by.name)
        )
        _audit(conn, now, by, f"grant {grant_id} revoked", study_uid=row.study_instance_uid)

    archive.run_write(write)


def grants_of(archive: Archive, study_uid: str, *, scope: Scope) -> list[GrantRow]:
    """The grants of a study (and of its patient) that `scope` owns, newest first.

    Raises:
        NotFound: `scope` may not see the study.
    """
    with archive.read() as conn:
        visible_study(conn, study_uid, scope)
        rows = conn.execute(
            _grants_select()
            .where(Study.study_instance_uid == study_uid, owned_studies(scope))
            .order_by(Grant.id.desc())
        )
        return [GrantRow(**row._mapping) for row in rows]


def create_link(
    archive: Archive, study_uids: list[str], *, label: str, expires_at: datetime, by: Actor
) -> tuple[int, str]:
    """A capability link to `study_uids`: its id and token (shown once, kept hashed).

    Raises:
        NotFound: a study that `by` does not own.
        InvalidGrant: no studies, or an expiry in the past.
    """
    if not study_uids:
        raise InvalidGrant("a link needs at least one study")
    if expires_at <= datetime.now(UTC):
        raise InvalidGrant("the expiry is in the past")
    token = LINK_PREFIX + secrets.token_urlsafe(32)

    def write(conn: Connection, now: datetime) -> int:
        owned = [_owned_study(conn, uid, by.scope) for uid in study_uids]
        link_id = conn.execute(
            insert(Link)
            .values(
                token_sha256=_digest(token),
                label=label,
                created_by=by.name,
                hospital=by.hospital,
                created_at=now,
                expires_at=expires_at,
            )
            .returning(Link.id)
        ).scalar_one()
        for uid, (study_pk, _, patient_id) in zip(study_uids, owned, strict=True):
            conn.execute(
                insert(Grant).values(
                    study_pk=study_pk,
                    link_id=link_id,
                    purpose="link",
                    created_by=by.name,
                    created_at=now,
                )
            )
            _audit(
                conn,
                now,
                by,
                f"link {link_id} ({label}) until {expires_at.isoformat()}",
                patient_id=patient_id,
                study_uid=uid,
            )
        return int(link_id)

    return archive.run_write(write), token


def resolve_link(archive: Archive, token: str) -> ValidLink | None:
    """The link `token` opens, if it exists, has not expired and was not revoked."""
    if not token.startswith(LINK_PREFIX):
        return None
    with archive.read() as conn:
        row = conn.execute(
            select(Link.id, Link.label, Link.expires_at).where(
                Link.token_sha256 == _digest(token),
                Link.revoked_at.is_(None),
                Link.expires_at > datetime.now(UTC),
            )
        ).first()
    return ValidLink(**row._mapping) if row is not None else None


def link_studies(archive: Archive, link_id: int) -> list[str]:
    """The StudyInstanceUIDs a link opens."""
    with archive.read() as conn:
        rows = conn.execute(
            select(Study.study_instance_uid)
            .join(Grant, Grant.study_pk == Study.id)
            .where(Grant.link_id == link_id)
            .order_by(Grant.id)
        )
        return [row[0] for row in rows]


def link_in_force(archive: Archive, link_id: int) -> bool:
    """Whether link `link_id` has neither expired nor been revoked."""
    with archive.read() as conn:
        found = conn.scalar(
            select(Link.id).where(
                Link.id == link_id,
                Link.revoked_at.is_(None),
                Link.expires_at > datetime.now(UTC),
            )
        )
    return found is not None


def revoke_link(archive: Archive, link_id: int, *, by: Actor) -> None:
    """Stop a link now.

    Raises:
        NotFound: no such link that `by` may revoke (made by their hospital).
    """

    def write(conn: Connection, now: datetime) -> None:
        query = update(Link).where(Link.id == link_id, Link.revoked_at.is_(None))
        if not by.scope.everything:
            query = query.where(Link.hospital == by.hospital, Link.hospital.is_not(None))
        if conn.execute(query.values(revoked_at=now, revoked_by=by.name)).rowcount != 1:
            raise NotFound(f"no link {link_id} in force")
        _audit(conn, now, by, f"link {link_id} revoked")

    archive.run_write(write)


def _owned_study(conn: Connection, study_uid: str, scope: Scope) -> tuple[int, int, str]:
    row = conn.execute(
        select(Study.id, Study.patient_pk, Patient.patient_id)
        .join(Patient, Patient.id == Study.patient_pk)
        .where(Study.study_instance_uid == study_uid, owned_studies(scope))
    ).first()
    if row is None:
        raise NotFound(f"no study {study_uid}")
    return row[0], row[1], row[2]


def _grants_select() -> Select[*tuple[Any, ...]]:
    return (
        select(
            Grant.id,
            Study.study_instance_uid,
            Grant.patient_pk.is_not(None).label("whole_patient"),
            Grant.hospital,
            Grant.user_name,
            Grant.purpose,
            Grant.expires_at,
            Grant.created_by,
            Grant.created_at,
            Grant.revoked_at,
        )
        .select_from(Grant)
        .join(
            Study,
            or_(Study.id == Grant.study_pk, Study.patient_pk == Grant.patient_pk),
        )
        .where(Grant.link_id.is_(None))
    )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _audit(
    conn: Connection,
    now: datetime,
    by: Actor,
    detail: str,
    *,
    patient_id: str | None = None,
    study_uid: str | None = None,
) -> None:
    write_audit(
        conn,
        now,
        action="share",  # who may see a study changed (IHE ATNA: security alert)
        actor=by.name,
        role=by.role,
        hospital=by.hospital,
        source_address=by.source_address,
        patient_id=patient_id,
        study_instance_uid=study_uid,
        detail=detail,
    )


def signing_secret(archive: Archive, name: str) -> bytes:
    """The archive's secret called `name`: made (256 random bits) the first time any node
    asks, then the same for every node that shares the index."""
    with archive.read() as conn:
        found = conn.scalar(select(SigningKey.secret).where(SigningKey.name == name))
    if found is not None:
        return bytes.fromhex(found)

    def write(conn: Connection, now: datetime) -> str:
        try:
            with conn.begin_nested():
                made = secrets.token_hex(32)
                conn.execute(insert(SigningKey).values(name=name, secret=made, created_at=now))
                return made
        except IntegrityError:  # another node made it first: theirs it is
            return str(conn.scalar(select(SigningKey.secret).where(SigningKey.name == name)))

    return bytes.fromhex(archive.run_write(write))
