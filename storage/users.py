"""The built-in user store: who may sign in, with which role, for which hospital.

Passwords are kept only as argon2id hashes (argon2-cffi, its default parameters: RFC 9106's
second recommendation); checking a password for a name that does not exist costs the same
time as for one that does, so timing does not tell which names exist. Every change is
written to the audit trail in the same transaction. An external OpenID Connect provider
(issue 7) will stand beside this store, not replace it: the embedded archive needs none.
"""

import re
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from storage.archive import Archive, write_audit
from storage.errors import InvalidUser
from storage.index.tables import User

ROLES = ("admin", "radiologist", "technologist", "referring", "auditor")
"""admin: runs the archive; radiologist: reads and reports; technologist: sends and fixes
studies; referring: a referring physician, sees what is shared; auditor: reads the audit
trail."""
MIN_PASSWORD = 12
_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")
_hasher = PasswordHasher()
_DUMMY = _hasher.hash("a password nobody has, for names that do not exist")


_ACCOUNT = (
    User.name,
    User.role,
    User.hospital,
    User.active,
    User.created_at,
    User.updated_at,
    User.tokens_after,
)


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: str
    hospital: str | None
    active: bool
    created_at: datetime
    updated_at: datetime
    tokens_after: datetime | None = None
    """Tokens issued before this moment are void."""


def add_user(
    archive: Archive, name: str, *, role: str, hospital: str | None, password: str, by: str
) -> None:
    """Add `name` (lower case letters, digits, ``. _ @ -``) with `role` for `hospital`."""
    _check_name(name)
    _check_role(role, hospital)
    digest = _hash(password)

    def write(conn: Connection, now: datetime) -> None:
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(User).values(
                        name=name,
                        role=role,
                        hospital=hospital,
                        password_hash=digest,
                        active=True,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            raise InvalidUser(f"a user called {name} exists already") from None
        write_audit(
            conn, now, action="user-add", actor=by, hospital=hospital, detail=f"{name}: {role}"
        )

    archive.run_write(write)


def set_password(archive: Archive, name: str, password: str, *, by: str) -> None:
    """A new password; the tokens signed in with the old one stop working."""
    digest = _hash(password)
    _change(archive, name, by, "user-password", "password changed", password_hash=digest, void=True)


def set_active(archive: Archive, name: str, active: bool, *, by: str) -> None:
    said = "enabled" if active else "disabled"
    _change(archive, name, by, "user-" + said.removesuffix("d"), said, active=active, void=True)


def end_sessions(archive: Archive, name: str, *, by: str, audit: bool = True) -> None:
    """Void every token `name` holds now (signing out, everywhere); `audit=False` for a
    caller that writes the audit row itself (with the source address)."""
    _change(archive, name, by, "sign-out", "every session ended", void=True, audit=audit)


def users(archive: Archive) -> list[Account]:
    """Every user, by name."""
    with archive.read() as conn:
        rows = conn.execute(select(*_ACCOUNT).order_by(User.name))
        return [Account(**row._mapping) for row in rows]


def account(archive: Archive, name: str) -> Account | None:
    """The user `name`, active or not; None if there is none."""
    with archive.read() as conn:
        row = conn.execute(select(*_ACCOUNT).where(User.name == name)).first()
    return Account(**row._mapping) if row is not None else None


def check_password(archive: Archive, name: str, password: str) -> Account | None:
    """The active user `name` if `password` is theirs; else None, in the same time."""
    with archive.read() as conn:
        row = conn.execute(select(*_ACCOUNT, User.password_hash).where(User.name == name)).first()
    values = dict(row._mapping) if row is not None else None
    digest = values.pop("password_hash") if values else _DUMMY
    try:
        _hasher.verify(digest, password)
    except (VerificationError, InvalidHashError):
        return None
    if values is None or not values["active"]:
        return None
    return Account(**values)


def _change(
    archive: Archive,
    name: str,
    by: str,
    action: str,
    said: str,
    *,
    void: bool,
    audit: bool = True,
    **values: object,
) -> None:
    def write(conn: Connection, now: datetime) -> None:
        if void:
            values["tokens_after"] = now
        done = conn.execute(update(User).where(User.name == name).values(updated_at=now, **values))
        if done.rowcount != 1:
            raise InvalidUser(f"no user called {name}")
        if audit:
            hospital = conn.scalar(select(User.hospital).where(User.name == name))
            write_audit(
                conn, now, action=action, actor=by, hospital=hospital, detail=f"{name}: {said}"
            )

    archive.run_write(write)


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidUser(
            f"{name!r} is not a user name: 2 to 64 of a-z, 0-9 and . _ @ -, "
            "starting with a letter or digit"
        )


def _check_role(role: str, hospital: str | None) -> None:
    if role not in ROLES:
        raise InvalidUser(f"{role!r} is not a role: {', '.join(ROLES)}")
    if hospital is None and role in ("technologist", "referring"):
        raise InvalidUser(f"a {role} belongs to a hospital: give its code")


def _hash(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidUser(f"a password has at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)
