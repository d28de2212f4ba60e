"""DICOM JSON (PS3.18 F.2) straight from an instance's stored header bytes.

Series metadata is the call a viewer makes for every series it opens: hundreds of
instances at once. pydicom reads each header into a ``Dataset`` and then converts it,
about 0.7 ms per CT slice; this walks the raw elements once and writes the JSON model
directly, several times faster. It handles the Little Endian syntaxes with the character
sets of the province (default, ``ISO_IR 100``, ``ISO_IR 192``) and returns ``None`` for
anything else (big endian, deflate, ISO 2022 code extensions, ambiguous VRs in implicit
files, undefined lengths outside sequences), which then goes through pydicom.
``tests/viewer_api/test_headerjson.py`` checks the two agree on pydicom's own test files.

Empty components of a multi-valued element are ``null``, as PS3.18 F.2.5 says.
"""

import base64
import math
import struct
import zlib
from collections.abc import Callable
from functools import cache
from typing import Any

from pydicom.datadict import dictionary_VR

from viewer_api.dicomweb.dicomjson import SINGLE_VALUED, person_name

_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(
    ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV")
)
_TEXT_VRS = frozenset(("AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI"))
_CHARSET_VRS = frozenset(("LO", "LT", "PN", "SH", "ST", "UC", "UT"))
_BINARY_VRS = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "UN"))
_NUMBERS = {
    "US": "H",
    "SS": "h",
    "UL": "I",
    "SL": "i",
    "FL": "f",
    "FD": "d",
    "SV": "q",
    "UV": "Q",
}
_CODECS = {"": "ascii", "ISO_IR 6": "ascii", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8"}
_MAX_DEPTH = 16
_INF = float("inf")

BulkUri = Callable[[int], str]
"""Makes the BulkDataURI of a top-level element from its tag."""


class _Fallback(Exception):
    """Something this reader does not handle; pydicom does it instead."""


@cache
def _implicit_vr(tag: int) -> str | None:
    element = tag & 0xFFFF
    if element == 0:
        return "UL"  # group length
    if (tag >> 16) % 2:  # private: creators are LO, the rest unknown to us
        return "LO" if 0x0010 <= element <= 0x00FF else None
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return None
    return None if " or " in vr else vr


def header_json(header: bytes, bulk_uri: BulkUri, threshold: int) -> dict[str, Any] | None:
    """The DICOM JSON object of a stored header (zlib-compressed bytes after the preamble
    up to the pixel data), or None when pydicom must do it."""
    try:
        raw = zlib.decompress(header)
        if raw[:4] != b"DICM":
            return None
        syntax, start = _file_meta(raw)
        if syntax == "1.2.840.10008.1.2.1":
            implicit = False
        elif syntax == "1.2.840.10008.1.2":
            implicit = True
        else:
            return None
        reader = _Reader(raw, implicit, bulk_uri, threshold)
        result, _ = reader.dataset(start, len(raw), depth=0)
        return result
    except (_Fallback, struct.error, IndexError, UnicodeDecodeError, zlib.error, ValueError):
        return None


def _file_meta(raw: bytes) -> tuple[str, int]:
    """The transfer syntax and where the dataset starts (after group 0002)."""
    position = 4
    syntax = ""
    while position + 8 <= len(raw):
        group, element = struct.unpack_from("<HH", raw, position)
        if group != 0x0002:
            break
        vr = raw[position + 4 : position + 6].decode("ascii")
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", raw, position + 8)
            value_start = position + 12
        else:
            (length,) = struct.unpack_from("<H", raw, position + 6)
            value_start = position + 8
        if element == 0x0010:
            syntax = raw[value_start : value_start + length].decode("ascii").strip("\0 ")
        position = value_start + length
    return syntax, position


class _Reader:
    def __init__(self, raw: bytes, implicit: bool, bulk_uri: BulkUri, threshold: int) -> None:
        self.raw = raw
        self.implicit = implicit
        self.bulk_uri = bulk_uri
        self.threshold = threshold

    def dataset(
        self, position: int, end: int, *, depth: int, codec: str = "ascii"
    ) -> tuple[dict[str, Any], int]:
        """Elements from `position` up to `end` or an item delimiter; (object, next)."""
        if depth > _MAX_DEPTH:
            raise _Fallback
        raw = self.raw
        out: dict[str, Any] = {}
        while position < end:
            group, element = struct.unpack_from("<HH", raw, position)
            tag = (group << 16) | element
            if tag == _ITEM_END:
                return out, position + 8
            if tag in (_ITEM, _SEQUENCE_END):
                raise _Fallback
            if self.implicit:
                vr = _implicit_vr(tag)
                if vr is None:
                    raise _Fallback
                (length,) = struct.unpack_from("<I", raw, position + 4)
                value_start = position + 8
            else:
                vr = raw[position + 4 : position + 6].decode("ascii")
                if vr in _LONG_VRS:
                    (length,) = struct.unpack_from("<I", raw, position + 8)
                    value_start = position + 12
                else:
                    (length,) = struct.unpack_from("<H", raw, position + 6)
                    value_start = position + 8
            if tag >> 16 == 0x0002 or tag >> 16 == 0xFFFE:
                raise _Fallback
            if vr == "SQ" or (self.implicit and length == _UNDEFINED and vr == "UN"):
                items, position = self.sequence(value_start, length, depth=depth, codec=codec)
                out[f"{tag:08X}"] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                continue
            if length == _UNDEFINED:
                raise _Fallback
            value_end = value_start + length
            if value_end > len(raw):
                raise _Fallback
            value = raw[value_start:value_end]
            if tag == 0x00080005:
                codec = _codec(value)
            if element == 0x0000:  # group lengths: not part of the JSON model
                position = value_end
                continue
            out[f"{tag:08X}"] = self.element(tag, vr, value, codec, top=depth == 0)
            position = value_end
        return out, position

    def sequence(
        self, position: int, length: int, *, depth: int, codec: str
    ) -> tuple[list[dict[str, Any]], int]:
        raw = self.raw
        end = len(raw) if length == _UNDEFINED else position + length
        items: list[dict[str, Any]] = []
        while position < end:
            group, element, item_length = struct.unpack_from("<HHI", raw, position)
            tag = (group << 16) | element
            if tag == _SEQUENCE_END:
                return items, position + 8
            if tag != _ITEM:
                raise _Fallback
            start = position + 8
            item_end = end if item_length == _UNDEFINED else start + item_length
            item, position = self.dataset(start, item_end, depth=depth + 1, codec=codec)
            items.append(item)
        if length == _UNDEFINED:
            raise _Fallback  # ran off the header without a delimiter
        return items, end

    def element(self, tag: int, vr: str, value: bytes, codec: str, *, top: bool) -> Any:
        if not value:
            return {"vr": vr}
        if vr in _BINARY_VRS:
            if len(value) > self.threshold and top:
                return {"vr": vr, "BulkDataURI": self.bulk_uri(tag)}
            return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
        if vr in _NUMBERS:
            code = _NUMBERS[vr]
            size = struct.calcsize(code)
            count = len(value) // size
            numbers = [
                n if n == n and n not in (_INF, -_INF) else None  # JSON has no NaN or inf
                for n in struct.unpack_from(f"<{count}{code}", value)
            ]
            return {"vr": vr, "Value": numbers}
        if vr == "AT":
            count = len(value) // 4
            pairs = struct.unpack_from(f"<{count * 2}H", value)
            tags = [f"{pairs[i]:04X}{pairs[i + 1]:04X}" for i in range(0, len(pairs), 2)]
            return {"vr": vr, "Value": tags}
        text = value.decode(codec if vr in _CHARSET_VRS or vr == "PN" else "ascii")
        text = text.rstrip("\0 ") if vr == "UI" else text.rstrip(" \0")
        if vr not in SINGLE_VALUED:
            text = text.lstrip(" ") if vr not in ("PN",) else text
        if not text:
            return {"vr": vr}
        parts = [text] if vr in SINGLE_VALUED else text.split("\\")
        if vr == "PN":
            return {"vr": vr, "Value": [person_name(p) for p in parts]}
        if vr in ("IS", "DS"):
            return {"vr": vr, "Value": [_number(p, vr) for p in parts]}
        if vr in _TEXT_VRS or vr in ("UT", "UR"):
            return {"vr": vr, "Value": [p.strip(" ") if p.strip(" ") else None for p in parts]}
        raise _Fallback


def _codec(value: bytes) -> str:
    names = value.decode("ascii").strip(" \0").split("\\")
    if len(names) != 1 or names[0] not in _CODECS:
        raise _Fallback  # code extensions: pydicom's decoder handles them
    return _CODECS[names[0]]


def _number(text: str, vr: str) -> int | float | None:
    text = text.strip(" ")
    if not text:
        return None
    number = int(text) if vr == "IS" else float(text)
    return number if math.isfinite(number) else None  # JSON has no NaN or inf
