"""DICOM JSON (PS3.18 F.2) for values read from the index: pure functions.

Numbers (IS, DS and the binary VRs) are JSON numbers, person names are objects with their
component groups, multi-valued text is split on the backslash.
"""

import math
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

JsonObject = dict[str, dict[str, Any]]

_INTS = {"IS", "SL", "SS", "UL", "US", "SV", "UV"}
_FLOATS = {"DS", "FL", "FD"}
SINGLE_VALUED = frozenset(("LT", "ST", "UT", "UR"))
"""VRs in which a backslash is text, not a value delimiter."""
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


@cache
def tag_and_vr(keyword: str) -> tuple[str, str]:
    """The 8-digit tag and the VR of a DICOM keyword."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    vr = dictionary_VR(tag)
    return f"{tag:08X}", vr.split(" or ")[0]


def attribute(keyword: str, value: Any) -> tuple[str, dict[str, Any]]:
    """One attribute as (tag, DICOM JSON object); an empty value has no "Value"."""
    tag, vr = tag_and_vr(keyword)
    values = _values(vr, value)
    return tag, ({"vr": vr, "Value": values} if values else {"vr": vr})


def index_object(values: Mapping[str, Any], keywords: Iterable[str]) -> JsonObject:
    """A DICOM JSON object with `keywords` taken from index `values`."""
    result: JsonObject = {}
    for keyword in keywords:
        tag, element = attribute(keyword, values.get(keyword))
        result[tag] = element
    return result


def _values(vr: str, value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, bool):
        value = int(value)
    if vr in _INTS or vr in _FLOATS:
        items = value if isinstance(value, list | tuple) else str(value).split("\\")
        cast = int if vr in _INTS else float
        out: list[Any] = []
        for item in items:
            try:
                number = cast(float(item)) if cast is int else cast(item)
            except (TypeError, ValueError, OverflowError):
                continue
            out.append(number if math.isfinite(number) else None)  # JSON has no NaN
        return out
    text = str(value)
    parts = [text] if vr in SINGLE_VALUED else text.split("\\")
    if vr == "PN":
        return [person_name(part) for part in parts]
    return parts


def person_name(text: str) -> dict[str, str] | None:
    """A PN value as its component groups (PS3.18 F.2.2); null when it is empty."""
    groups = text.rstrip(" ").split("=")
    named = {name: group for name, group in zip(_PN_GROUPS, groups, strict=False) if group}
    return named or None
