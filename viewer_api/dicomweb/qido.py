"""QIDO-RS query parameters (PS3.18 8.3.4) into an archive query: pure functions.

Keys are keywords (``PatientID``) or tags (``00100020``); values arrive percent-decoded.
``includefield`` may repeat or list several attributes separated by commas, or be ``all``.
UID lists may be separated by backslashes or commas, as may ``ModalitiesInStudy``.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from storage import BY_KEYWORD, InvalidQuery, Level, Query, build_query
from storage.attributes import Kind
from viewer_api.errors import BadRequest
from viewer_api.rows import MAX_INTEGER

_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_COUNT = re.compile(r"[0-9]{1,19}")
_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
_IGNORED = {"_", "orderby"}  # cache busters some viewers add; ordering is the archive's
_COMMA_LISTS = {"ModalitiesInStudy", "Modality"}


@dataclass(frozen=True, slots=True)
class QidoRequest:
    query: Query
    include: frozenset[str]
    """Keywords asked for with includefield that the index has no column for."""
    include_all: bool
    limit: int
    offset: int


def keyword_of(key: str) -> str:
    """The keyword a query key names, whether given as a keyword or as a tag.

    Raises:
        BadRequest: neither.
    """
    if _TAG.match(key):
        keyword = keyword_for_tag(int(key, 16))
        if keyword:
            return str(keyword)
    elif tag_for_keyword(key) is not None:
        return key
    raise BadRequest(f"{key!r} is not a DICOM attribute keyword or tag")


def parse_qido(
    level: Level,
    params: Iterable[tuple[str, str]],
    scope: Mapping[str, str],
    *,
    max_results: int,
) -> QidoRequest:
    """Read the parameters of a QIDO-RS request at `level`, within `scope` (the UIDs in the
    path).

    Raises:
        BadRequest: an unknown key, a bad value, a key that cannot be matched at this level.
    """
    keys: dict[str, str | None] = {}
    include: set[str] = set()
    include_all = False
    limit, offset = max_results, 0
    for name, value in params:
        if name in _IGNORED:
            continue
        if name in _CONTROL:
            if name == "limit":
                limit = min(_count(name, value), max_results)
            elif name == "offset":
                offset = _count(name, value)
            elif name == "includefield":
                for item in filter(None, (v.strip() for v in value.split(","))):
                    if item.lower() == "all":
                        include_all = True
                    else:
                        include.add(keyword_of(item))
            continue
        if "." in name:
            raise BadRequest(f"{name!r}: matching on sequence items is not supported")
        keyword = keyword_of(name)
        if keyword in keys:
            raise BadRequest(f"{keyword} is given twice")
        text = value
        attribute = BY_KEYWORD.get(keyword)
        if attribute is not None and (keyword in _COMMA_LISTS or attribute.kind is Kind.UID):
            text = text.replace(",", "\\")
        if attribute is None:
            if text.strip("*"):
                raise BadRequest(
                    f"{keyword} cannot be matched on: the archive indexes "
                    + ", ".join(sorted(BY_KEYWORD))
                )
            include.add(keyword)  # an empty key asks for the attribute to be returned
            continue
        keys[keyword] = text
    for keyword, uid in scope.items():
        keys[keyword] = uid
    try:
        query = build_query(level, keys, limit=limit + 1, offset=offset)
    except InvalidQuery as exc:
        raise BadRequest(exc.reason) from None
    return QidoRequest(
        query,
        frozenset(k for k in include if k not in BY_KEYWORD),
        include_all,
        limit,
        offset,
    )


def _count(name: str, value: str) -> int:
    # ASCII digits only: isdigit() passes '²', which int() refuses.
    if not _COUNT.fullmatch(value) or int(value) > MAX_INTEGER:
        raise BadRequest(f"{name} must be a whole number up to {MAX_INTEGER}, not {value[:40]!r}")
    return int(value)
