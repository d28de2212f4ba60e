"""Radiologists' report-signing certificates: one active per user, the older ones kept as
revoked, every change audited in the same transaction.

A row holds the certificate (PEM) and its private key as a PKCS#12 file encrypted under the
radiologist's PIN; this module neither opens nor checks them (``viewer_api.reports.signing``
does), it only keeps them.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from storage.archive import Archive, write_audit
from storage.errors import InvalidUser
from storage.index.tables import User, UserCertificate

SIGNING_ROLES = ("radiologist", "admin")
"""The roles that may hold a report-signing certificate."""

_ROW = (
    UserCertificate.id,
    UserCertificate.user_name,
    UserCertificate.subject,
    UserCertificate.certificate,
    UserCertificate.pkcs12,
    UserCertificate.not_after,
    UserCertificate.created_at,
    UserCertificate.revoked_at,
)


@dataclass(frozen=True, slots=True)
class CertificateRow:
    id: int
    user_name: str
    subject: str
    """RFC 4514."""
    certificate: str
    """PEM."""
    pkcs12: bytes | None = None
    """The key and chain, encrypted under the radiologist's PIN."""
    not_after: datetime | None = None
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def add_certificate(
    archive: Archive,
    user_name: str,
    *,
    certificate_pem: str,
    pkcs12: bytes,
    subject: str,
    not_after: datetime,
    actor: str,
) -> CertificateRow:
    """Keep a new signing certificate for `user_name`; the one they had is revoked.

    Raises:
        InvalidUser: no such user, or one whose role may not sign reports.
    """

    def write(conn: Connection, now: datetime) -> CertificateRow:
        hospital = _signing_user(conn, user_name)
        revoked = _revoke(conn, user_name, now)
        new_id = conn.execute(
            insert(UserCertificate)
            .values(
                user_name=user_name,
                subject=subject,
                certificate=certificate_pem,
                pkcs12=pkcs12,
                not_after=not_after,
                created_at=now,
            )
            .returning(UserCertificate.id)
        ).scalar_one()
        said = f"{user_name}: {subject}, until {not_after:%Y-%m-%d}"
        if revoked:
            said += f" (replaces {revoked})"
        write_audit(
            conn, now, action="certificate-add", actor=actor, hospital=hospital, detail=said
        )
        return CertificateRow(
            id=new_id,
            user_name=user_name,
            subject=subject,
            certificate=certificate_pem,
            pkcs12=pkcs12,
            not_after=not_after,
            created_at=now,
        )

    return archive.run_write(write)


def current_certificate(archive: Archive, user_name: str) -> CertificateRow | None:
    """The user's active (not revoked) certificate, or None. Whether it has expired is for
    the caller to judge, at the moment of signing."""
    with archive.read() as conn:
        row = conn.execute(
            select(*_ROW)
            .where(UserCertificate.user_name == user_name, UserCertificate.revoked_at.is_(None))
            .order_by(UserCertificate.id.desc())
            .limit(1)
        ).first()
    return CertificateRow(**row._mapping) if row is not None else None


def list_certificates(archive: Archive, user_name: str) -> list[CertificateRow]:
    """Every certificate the user has had, oldest first, without their keys."""
    with archive.read() as conn:
        rows = conn.execute(
            select(*(c for c in _ROW if c is not UserCertificate.pkcs12))
            .where(UserCertificate.user_name == user_name)
            .order_by(UserCertificate.id)
        )
        return [CertificateRow(**row._mapping) for row in rows]


def revoke_certificates(archive: Archive, user_name: str, actor: str) -> int:
    """Revoke the user's active certificate (they can no longer sign until given a new
    one); return how many were revoked (0 or 1)."""

    def write(conn: Connection, now: datetime) -> int:
        hospital = conn.scalar(select(User.hospital).where(User.name == user_name))
        revoked = _revoke(conn, user_name, now)
        if revoked:
            write_audit(
                conn,
                now,
                action="certificate-revoke",
                actor=actor,
                hospital=hospital,
                detail=f"{user_name}: {revoked} revoked",
            )
        return revoked

    return archive.run_write(write)


def _signing_user(conn: Connection, user_name: str) -> str | None:
    """The user's hospital, if they may hold a signing certificate."""
    row = conn.execute(select(User.role, User.hospital).where(User.name == user_name)).first()
    if row is None:
        raise InvalidUser(f"no user called {user_name}")
    if row.role not in SIGNING_ROLES:
        raise InvalidUser(
            f"{user_name} is a {row.role}: only a radiologist or an admin signs reports"
        )
    hospital: str | None = row.hospital
    return hospital


def _revoke(conn: Connection, user_name: str, now: datetime) -> int:
    done = conn.execute(
        update(UserCertificate)
        .where(UserCertificate.user_name == user_name, UserCertificate.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return done.rowcount
