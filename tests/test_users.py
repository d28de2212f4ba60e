"""The built-in user store as an administrator uses it: `pacs user add/list/disable/enable/
passwd`, passwords kept only as argon2id hashes, every change audited."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from storage import Archive, InvalidUser
from storage.index.tables import AuditEvent, User
from storage.users import add_user, check_password, set_active, set_password, users

PASSWORD = "mật khẩu dài đủ 12"  # noqa: S105 (a test password; Vietnamese, over 12)


def test_a_password_is_kept_as_an_argon2id_hash_and_checked(archive: Archive) -> None:
    add_user(archive, "lan.nguyen", role="radiologist", hospital=None, password=PASSWORD, by="root")
    with archive.read() as conn:
        stored = conn.scalar(select(User.password_hash).where(User.name == "lan.nguyen"))
    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    account = check_password(archive, "lan.nguyen", PASSWORD)
    assert account is not None
    assert account.role == "radiologist"
    assert check_password(archive, "lan.nguyen", PASSWORD + "x") is None
    assert check_password(archive, "nobody", PASSWORD) is None


def test_a_disabled_user_cannot_sign_in_and_a_new_password_replaces_the_old(
    archive: Archive,
) -> None:
    add_user(archive, "ktv.minh", role="technologist", hospital="BVDKLD", password=PASSWORD, by="a")
    set_active(archive, "ktv.minh", False, by="admin")
    assert check_password(archive, "ktv.minh", PASSWORD) is None
    set_active(archive, "ktv.minh", True, by="admin")
    set_password(archive, "ktv.minh", "another long password", by="admin")
    assert check_password(archive, "ktv.minh", PASSWORD) is None
    assert check_password(archive, "ktv.minh", "another long password") is not None
    with archive.read() as conn:
        actions = list(conn.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))
    assert actions == ["user-add", "user-disable", "user-enable", "user-password"]


@pytest.mark.parametrize(
    ("name", "role", "hospital", "password", "problem"),
    [
        ("Bad Name", "admin", None, PASSWORD, "is not a user name"),
        ("ok.name", "boss", None, PASSWORD, "'boss' is not a role"),
        ("ok.name", "referring", None, PASSWORD, "a referring belongs to a hospital"),
        ("ok.name", "admin", None, "short", "at least 12 characters"),
    ],
)
def test_a_bad_user_is_refused_with_the_reason(
    archive: Archive, name: str, role: str, hospital: str | None, password: str, problem: str
) -> None:
    with pytest.raises(InvalidUser) as refused:
        add_user(archive, name, role=role, hospital=hospital, password=password, by="admin")
    assert problem in refused.value.reason
    assert users(archive) == []


def _user(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PACS_DATA_DIR": str(data_dir), "PACS_MIN_FREE_MB": "0", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "pacs", "user", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_pacs_user_commands(tmp_path: Path) -> None:
    data = tmp_path / "archive"
    added = _user(
        data, "add", "bs.hoa", "--role", "radiologist", "--password-stdin", stdin=PASSWORD
    )
    assert added.returncode == 0, added.stderr
    assert "Added bs.hoa: radiologist" in added.stdout
    again = _user(
        data, "add", "bs.hoa", "--role", "radiologist", "--password-stdin", stdin=PASSWORD
    )
    assert again.returncode == 2
    assert "a user called bs.hoa exists already" in again.stderr
    assert _user(data, "disable", "bs.hoa").returncode == 0
    listed = _user(data, "list")
    assert "radiologist" in listed.stdout
    assert "no" in listed.stdout.split("bs.hoa")[1]  # not active
    missing = _user(data, "disable", "nobody")
    assert missing.returncode == 2
    assert "no user called nobody" in missing.stderr
    weak = _user(data, "passwd", "bs.hoa", "--password-stdin", stdin="short\n")
    assert weak.returncode == 2
    assert "at least 12 characters" in weak.stderr
    assert PASSWORD not in added.stdout + added.stderr + listed.stdout
