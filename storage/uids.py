"""UID syntax (PS3.5 9.1), as a validator that returns a reason instead of raising."""

import re

_UID_CHARS = re.compile(r"[0-9.]+")
MAX_UID_LENGTH = 64


def uid_problem(value: str) -> str | None:
    """Return why `value` is not a usable UID, or ``None`` when it is.

    Leading zeros in a component are tolerated: real modalities send them and nothing in
    the archive depends on their absence (blob keys never come from UIDs).
    """
    if not value:
        return "is empty"
    if len(value) > MAX_UID_LENGTH:
        return f"is {len(value)} characters long (at most {MAX_UID_LENGTH})"
    if not _UID_CHARS.fullmatch(value):
        return "has characters other than digits and dots"
    if value.startswith(".") or value.endswith(".") or ".." in value:
        return "has an empty component"
    return None


def is_valid_uid(value: str) -> bool:
    return uid_problem(value) is None
