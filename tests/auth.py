"""Credentials for tests: every test server signs with SECRET, and has the user ADMIN, so
`http` (an httpx client with ADMIN's token) works against any of them."""

import httpx

from storage import Archive
from storage.users import account, add_user
from viewer_api.auth import TokenIssuer

SECRET = "a-secret-for-the-test-suite-only-never-for-an-archive"  # noqa: S105 (tests only)
ADMIN = "test-admin"
PASSWORD = "a long enough test password"  # noqa: S105 (tests only)
_issuer = TokenIssuer(SECRET.encode(), hours=24)


def bearer(name: str = ADMIN, role: str = "admin", hospital: str | None = None) -> dict[str, str]:
    """An Authorization header for `name` (who must exist in the server's archive)."""
    token, _ = _issuer.issue(name, role, hospital)
    return {"Authorization": f"Bearer {token}"}


def ensure_user(
    archive: Archive, name: str = ADMIN, role: str = "admin", hospital: str | None = None
) -> dict[str, str]:
    """Add `name` unless present; their Authorization header."""
    if account(archive, name) is None:
        add_user(archive, name, role=role, hospital=hospital, password=PASSWORD, by="tests")
    return bearer(name, role, hospital)


ADMIN_HEADERS = bearer()
http = httpx.Client(headers=ADMIN_HEADERS)
"""For requests to test servers as ADMIN (the archive's administrator: sees everything)."""
