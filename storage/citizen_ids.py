"""The citizen identity number an instance carries (pure functions, read at ingest).

Vietnam's citizen identity number (CCCD, *căn cước công dân*; the same 12 digits since the
2024 Identity Law renamed the card *căn cước*) is the key that finds one person's studies
across the province's hospitals, whose own patient IDs differ. It arrives as an item of
Other Patient IDs Sequence (0010,1002) whose Issuer of Patient ID (0010,0021) is one the
site names (``PACS_CITIZEN_ID_ISSUERS``), its Patient ID (0010,0020) the number; or as the
value of a tag the site names (``PACS_CITIZEN_ID_TAG``), which then comes first. Only
exactly 12 ASCII digits count: anything else is ignored, logged at debug level without the
value (a national identity number is personal data, even a malformed one).
"""

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

OTHER_PATIENT_IDS_SEQUENCE = 0x00101002
_PATIENT_ID, _ISSUER = 0x00100020, 0x00100021
DEFAULT_ISSUERS = "CCCD,CC,VNM-CCCD"
"""Issuers of Patient ID that name the CCCD unless the site says otherwise."""
_CITIZEN_ID = re.compile(r"[0-9]{12}")
_HEX_TAG = re.compile(r"\(?\s*([0-9A-Fa-f]{4})\s*,?\s*([0-9A-Fa-f]{4})\s*\)?")
_ITEM_ERRORS = (ValueError, TypeError, KeyError, AttributeError, LookupError)


@dataclass(frozen=True, slots=True)
class CitizenIdSource:
    """Where this site's instances carry the CCCD."""

    issuers: frozenset[str] = frozenset(DEFAULT_ISSUERS.split(","))
    """Issuers of Patient ID (upper case) whose Other Patient IDs item holds the CCCD."""
    tag: int | None = None
    """A top-level tag whose value is the CCCD; it comes before the sequence."""

    @classmethod
    def parse(cls, issuers: str, tag: str | None) -> "CitizenIdSource":
        """From the settings' text: comma-separated issuers, and a tag (see `parse_tag`).

        Raises:
            ValueError: the tag is not one (with a sentence saying why).
        """
        names = frozenset(n.strip().upper() for n in issuers.split(",") if n.strip())
        return cls(names, parse_tag(tag) if tag and tag.strip() else None)


def parse_tag(text: str) -> int:
    """A data element tag from ``(0010,1000)``, ``0010,1000``, ``00101000`` or a keyword
    (``OtherPatientIDs``); private tags are written in hex (``(0011,1010)``).

    Raises:
        ValueError: not a tag, or one the header reader never sees (File Meta Information,
            pixel data and after, item delimiters).
    """
    found = _HEX_TAG.fullmatch(text.strip())
    if found is not None:
        tag = int(found[1] + found[2], 16)
    else:
        keyword_tag = tag_for_keyword(text.strip())
        if keyword_tag is None:
            raise ValueError(
                f"{text!r} is neither a tag such as (0010,1000) or 00101000 nor a DICOM keyword"
            )
        tag = int(keyword_tag)
    if not 0x00080000 <= tag < 0x7FE00000:
        raise ValueError(
            f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is not a dataset element before the pixel "
            "data (groups 0008 to 7FDF)"
        )
    return tag


def citizen_id(values: Callable[[int], Any], source: CitizenIdSource) -> str | None:
    """The CCCD among `values` (a value by tag, as the header reader gives them), or None.

    The configured tag first, then the Other Patient IDs items under a configured issuer.
    Two different valid numbers in one place are ambiguous, and ignored.
    """
    if source.tag is not None:
        found = valid_citizen_id(values(source.tag), f"tag {source.tag:08X}")
        if found is not None:
            return found
    items = values(OTHER_PATIENT_IDS_SEQUENCE) if source.issuers else None
    if not isinstance(items, Iterable) or isinstance(items, str | bytes):
        return None
    numbers: list[Any] = []
    for item in items:
        if not isinstance(item, Dataset):
            continue
        try:  # the raw values: converting them costs more than reading the items did
            issuer = _texts(_raw(item, _ISSUER))
            if issuer and issuer[0].upper() in source.issuers:
                numbers.append(_raw(item, _PATIENT_ID))
        except _ITEM_ERRORS:
            continue
    return valid_citizen_id(numbers, "Other Patient IDs Sequence") if numbers else None


def valid_citizen_id(value: Any, where: str = "the value") -> str | None:
    """The one 12-digit number in `value` (text, bytes, or several values), else None."""
    texts = [t for t in _texts(value) if t]
    if not texts:
        return None
    valid = {t for t in texts if _CITIZEN_ID.fullmatch(t)}
    if len(valid) == 1:
        return valid.pop()
    if valid:
        log.debug("%s holds %d different citizen identity numbers; ignored", where, len(valid))
    else:
        log.debug(
            "%s is not a citizen identity number (12 digits; %s); ignored",
            where,
            ", ".join(f"{len(t)} characters" for t in texts[:3]),
        )
    return None


def _raw(item: Dataset, tag: int) -> Any:
    """The element's value as read (bytes, unless something converted it already)."""
    return item.get_item(tag).value if tag in item else None


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        return [part.strip("\0 ") for part in value.split("\\")]
    if isinstance(value, Iterable):
        return [text for part in value for text in _texts(part)]
    return [str(value).strip("\0 ")]
