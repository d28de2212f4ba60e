"""Query values → match conditions, per PS3.4 C.2.2.2 (pure, shared by C-FIND and QIDO-RS).

========================  ===========================================
Value                      Condition
========================  ===========================================
empty, ``*``               :class:`Universal` (C.2.2.2.3)
``ABC``                    :class:`Exact` (single value, C.2.2.2.1)
``AB*``, ``A?C``           :class:`Wildcard` (C.2.2.2.4)
``20260101-20261231``      :class:`Range` of dates or times (C.2.2.2.5)
``1.2.3\\1.2.4``           :class:`AnyOf` UIDs (C.2.2.2.2) or values
========================  ===========================================
"""

from dataclasses import dataclass

from storage.attributes import Attribute, Kind
from storage.errors import InvalidQuery
from storage.headers import normalise_date, normalise_time
from storage.names import folded_key, upper_key
from storage.uids import uid_problem


@dataclass(frozen=True, slots=True)
class Universal:
    pass


@dataclass(frozen=True, slots=True)
class Exact:
    value: str | int | float


@dataclass(frozen=True, slots=True)
class Wildcard:
    pattern: str  # DICOM wildcards: * any run, ? one character


@dataclass(frozen=True, slots=True)
class Range:
    low: str | None
    high: str | None


@dataclass(frozen=True, slots=True)
class AnyOf:
    options: tuple["Exact | Wildcard", ...]


Condition = Universal | Exact | Wildcard | Range | AnyOf


def parse_condition(attribute: Attribute, raw: str | None) -> Condition:
    """The condition that `raw` (the key's value in a query) asks for on `attribute`.

    Raises:
        InvalidQuery: the value cannot be matched against an attribute of this kind.
    """
    text = (raw or "").strip("\0 ")
    if text in ("", "*"):
        return Universal()
    kind = attribute.kind
    if kind is Kind.UID:
        return _uids(attribute, text)
    if kind in (Kind.DATE, Kind.TIME):
        return _dates_or_times(attribute, text)
    if kind in (Kind.INT, Kind.DECIMAL):
        return _number(attribute, text)
    values = [v for v in text.split("\\") if v.strip(" ")] if "\\" in text else [text]
    options = tuple(_text_option(value) for value in values)
    if any(isinstance(o, Wildcard) and o.pattern.strip("*") == "" for o in options):
        return Universal()
    return options[0] if len(options) == 1 else AnyOf(options)


def name_key(value: str, *, fold: bool) -> str:
    """The key a person name is matched on: trailing empty components dropped, case folded."""
    trimmed = value.rstrip("^= ")
    return folded_key(trimmed) if fold else upper_key(trimmed)


def _text_option(value: str) -> Exact | Wildcard:
    if "*" in value or "?" in value:
        return Wildcard(value)
    return Exact(value)


def _uids(attribute: Attribute, text: str) -> Condition:
    values = [v.strip("\0 ") for v in text.split("\\") if v.strip("\0 ")]
    for value in values:
        if "*" in value or "?" in value:
            raise InvalidQuery(f"{attribute.keyword}: wildcards are not allowed in UIDs")
        if problem := uid_problem(value):
            raise InvalidQuery(f"{attribute.keyword}: {value[:70]!r} {problem}")
    if len(values) == 1:
        return Exact(values[0])
    return AnyOf(tuple(Exact(v) for v in values))


def _dates_or_times(attribute: Attribute, text: str) -> Condition:
    is_date = attribute.kind is Kind.DATE
    if "-" not in text:
        value = normalise_date(text) if is_date else normalise_time(text)
        if value is None:
            raise InvalidQuery(f"{attribute.keyword}: {text[:40]!r} is not valid")
        if not is_date and "." not in text and len(text.replace(":", "")) < 6:
            # A partial time ("10", "1030") names a whole hour or minute.
            return Range(value, _time_upper_bound(text))
        return Exact(value)
    if text.count("-") != 1:
        raise InvalidQuery(f"{attribute.keyword}: {text[:40]!r} is not a valid range")
    low_text, high_text = (part.strip() for part in text.split("-"))
    if not low_text and not high_text:
        return Universal()
    low = high = None
    if low_text:
        low = normalise_date(low_text) if is_date else normalise_time(low_text)
        if low is None:
            raise InvalidQuery(f"{attribute.keyword}: {low_text[:40]!r} is not valid")
    if high_text:
        high = normalise_date(high_text) if is_date else _time_upper_bound(high_text)
        if high is None:
            raise InvalidQuery(f"{attribute.keyword}: {high_text[:40]!r} is not valid")
    if low is not None and high is not None and low > high:
        raise InvalidQuery(f"{attribute.keyword}: the range {text[:40]!r} is empty")
    return Range(low, high)


def _time_upper_bound(text: str) -> str | None:
    """The last instant a (possibly partial) time names: ``11`` → ``115959.999999``."""
    compact = text.strip().replace(":", "")
    whole, _, fraction = compact.partition(".")
    if normalise_time(compact) is None:
        return None
    if fraction:
        return f"{whole.ljust(6, '0')}.{fraction[:6].ljust(6, '9')}"
    return f"{whole}{'5959'[: 6 - len(whole)]}.999999"


_INDEX_INTEGERS = range(-(2**63), 2**63)
"""What the index's integer columns can be compared with (SQLite's INTEGER, PostgreSQL's
BIGINT): a larger number is an error of the database, not a mismatch."""


def _number(attribute: Attribute, text: str) -> Condition:
    try:
        if attribute.kind is Kind.INT:
            number = int(text)
            if number not in _INDEX_INTEGERS:
                raise InvalidQuery(f"{attribute.keyword}: {text[:40]!r} is out of range")
            return Exact(number)
        return Exact(float(text))
    except ValueError:
        raise InvalidQuery(f"{attribute.keyword}: {text[:40]!r} is not a number") from None
