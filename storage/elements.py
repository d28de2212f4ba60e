"""A small, strict reader of the elements before the pixel data (the ingest fast path).

pydicom builds a full ``Dataset`` to read a header: about 2 ms per CT slice, on the path of
every C-STORE. This reader walks the elements of a Little Endian file with bounds checks
on every length, keeps only the elements the index needs (undecoded), and skips the rest,
sequences included. It knows its limits: anything it is not sure of (big endian, deflate,
an unknown VR, tags out of order, a length past the end, nesting deeper than 32) makes it
return ``None``, and :func:`storage.headers.read_header` falls back to pydicom, which then
decides. The two paths must agree: ``tests/storage/test_elements.py`` checks that they do.
"""

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")

_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
_SHORT_VRS = frozenset(
    (
        b"AE",
        b"AS",
        b"AT",
        b"CS",
        b"DA",
        b"DS",
        b"DT",
        b"FD",
        b"FL",
        b"IS",
        b"LO",
        b"LT",
        b"PN",
        b"SH",
        b"SL",
        b"SS",
        b"ST",
        b"TM",
        b"UI",
        b"UL",
        b"US",
    )
)
_MAX_DEPTH = 32
_HEADER = struct.Struct("<HHI")
_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class ScannedHeader:
    transfer_syntax_uid: str
    meta: dict[int, bytes]
    """File Meta Information elements (group 0002), raw values."""
    elements: dict[int, tuple[str, bytes]]
    """The wanted top-level dataset elements: tag → (VR, raw value)."""
    pixel_start: int
    """Offset of the pixel data element's tag, or the end of the dataset if it has none."""


class _Unsure(Exception):
    """Something the fast path does not handle; pydicom decides instead."""


def scan(data: bytes, file_size: int, wanted: Iterable[int]) -> ScannedHeader | None:
    """Read the header in `data` (the start of a Part 10 file of `file_size` bytes).

    Returns None when the fast path is unsure; the caller then reads with pydicom.
    """
    try:
        return _scan(memoryview(data), file_size, frozenset(wanted))
    except (_Unsure, struct.error, IndexError, UnicodeDecodeError):
        return None


def _scan(data: memoryview, file_size: int, wanted: frozenset[int]) -> ScannedHeader:
    if len(data) < 132 or bytes(data[128:132]) != b"DICM":
        raise _Unsure
    meta: dict[int, bytes] = {}
    position = 132
    while position + 8 <= len(data):
        group, number = _TAG.unpack_from(data, position)
        if group != 0x0002:
            break
        position, value = _explicit_element(data, position)
        meta[(group << 16) | number] = bytes(value)
    syntax = meta.get(0x00020010, b"").decode("ascii").strip("\0 ")
    if syntax == _BIG_ENDIAN or syntax in _DEFLATED or not syntax:
        raise _Unsure
    explicit = syntax != IMPLICIT_LE
    elements: dict[int, tuple[str, bytes]] = {}
    previous = 0
    while True:
        if position == file_size:
            return ScannedHeader(syntax, meta, elements, position)
        if position + 8 > len(data):
            raise _Unsure  # the header is longer than what was read, or truncated
        group, number = _TAG.unpack_from(data, position)
        tag = (group << 16) | number
        if tag <= previous:
            raise _Unsure
        previous = tag
        if tag in _PIXEL_TAGS:
            return ScannedHeader(syntax, meta, elements, position)
        vr, length, value_start = _element_header(data, position, explicit, tag)
        if length == _UNDEFINED:
            if vr not in ("SQ", "UN") and explicit:
                raise _Unsure
            end = _skip_sequence(data, value_start, explicit and vr != "UN", 1)
            if tag in wanted:  # kept with its delimiters (Other Patient IDs Sequence)
                elements[tag] = (vr, bytes(data[value_start:end]))
            position = end
            continue
        end = value_start + length
        if end > len(data):
            raise _Unsure
        if tag in wanted:
            elements[tag] = (vr, bytes(data[value_start:end]))
        position = end


def _explicit_element(data: memoryview, position: int) -> tuple[int, memoryview]:
    vr = bytes(data[position + 4 : position + 6])
    if vr in _LONG_VRS:
        (length,) = _U32.unpack_from(data, position + 8)
        start = position + 12
    elif vr in _SHORT_VRS:
        (length,) = _U16.unpack_from(data, position + 6)
        start = position + 8
    else:
        raise _Unsure
    if length == _UNDEFINED or start + length > len(data):
        raise _Unsure
    return start + length, data[start : start + length]


def _element_header(
    data: memoryview, position: int, explicit: bool, tag: int
) -> tuple[str, int, int]:
    """(VR, value length, value offset) of the element at `position`."""
    if not explicit:
        (length,) = _U32.unpack_from(data, position + 4)
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
        return vr, length, position + 8
    raw_vr = bytes(data[position + 4 : position + 6])
    if raw_vr in _LONG_VRS:
        (length,) = _U32.unpack_from(data, position + 8)
        return raw_vr.decode(), length, position + 12
    if raw_vr in _SHORT_VRS:
        (length,) = _U16.unpack_from(data, position + 6)
        return raw_vr.decode(), length, position + 8
    raise _Unsure


def _skip_sequence(data: memoryview, position: int, explicit: bool, depth: int) -> int:
    """Skip the items of an undefined-length sequence; return the offset after its end."""
    if depth > _MAX_DEPTH:
        raise _Unsure
    while True:
        group, number, length = _HEADER.unpack_from(data, position)
        tag = (group << 16) | number
        position += 8
        if tag == _SEQUENCE_END:
            return position
        if tag != _ITEM:
            raise _Unsure
        if length != _UNDEFINED:
            position += length
            if position > len(data):
                raise _Unsure
            continue
        position = _skip_item(data, position, explicit, depth)


def _skip_item(data: memoryview, position: int, explicit: bool, depth: int) -> int:
    """Skip the elements of an undefined-length item; return the offset after its end."""
    while True:
        group, number = _TAG.unpack_from(data, position)
        tag = (group << 16) | number
        if tag == _ITEM_END:
            return position + 8
        vr, length, start = _element_header(data, position, explicit, tag)
        if length == _UNDEFINED:
            position = _skip_sequence(data, start, explicit and vr != "UN", depth + 1)
        else:
            position = start + length
            if position > len(data):
                raise _Unsure
