"""Reading, leniently: where each element of a file is.

The families cut and edit the sample at its elements' offsets, found here by walking its
bytes (Explicit VR Little Endian, into sequences and items) rather than by asking an
encoder, which would not say where anything lies.
"""

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from tests.reliability.corpus.encoding import ITEM, ITEM_END, LONG_VRS, SEQUENCE_END, UNDEFINED


@dataclass(frozen=True, slots=True)
class Span:
    """One element (or item, or delimiter) of an encoded dataset."""

    offset: int
    header: int
    """Bytes of its header: 8 or 12."""
    length: int
    """Its value length as declared (UNDEFINED for undefined length)."""
    tag: int
    vr: bytes
    depth: int
    """0 at the top level, 1 inside the first sequence..."""

    @property
    def label(self) -> str:
        vr = f" {self.vr.decode('latin-1')}" if self.vr else ""
        return f"({self.tag >> 16:04X},{self.tag & 0xFFFF:04X}){vr}"


def meta_end(data: bytes) -> int | None:
    """Offset of the dataset after the File Meta Information; None if there is none."""
    if data[128:132] != b"DICM":
        return None
    position = 132
    while position + 8 <= len(data):
        group = struct.unpack_from("<H", data, position)[0]
        if group != 0x0002:
            return position
        vr = data[position + 4 : position + 6]
        if vr in LONG_VRS:
            if position + 12 > len(data):
                return None
            position += 12 + struct.unpack_from("<I", data, position + 8)[0]
        else:
            position += 8 + struct.unpack_from("<H", data, position + 6)[0]
    return position if position == len(data) else None


def meta_values(data: bytes) -> dict[int, str]:
    """The File Meta Information's UI values, by tag."""
    values: dict[int, str] = {}
    end = meta_end(data)
    if end is None:
        return values
    for span in walk(data, 132, end):
        if span.vr == b"UI":
            start = span.offset + span.header
            raw = data[start : start + span.length]
            values[span.tag] = raw.decode("latin-1").rstrip("\0 ")
    return values


def walk(data: bytes, start: int, end: int, depth: int = 0) -> Iterator[Span]:
    """Every element from `start` to `end` (Explicit VR Little Endian), into sequences."""
    position = start
    while position + 8 <= end:
        group, number = struct.unpack_from("<HH", data, position)
        tag = (group << 16) | number
        if group == 0xFFFE:  # an item or a delimiter: tag and a 4-byte length, no VR
            length = struct.unpack_from("<I", data, position + 4)[0]
            yield Span(position, 8, length, tag, b"", depth)
            if tag in (ITEM_END, SEQUENCE_END):
                return
            value_end = _value_end(data, position + 8, length, end, depth + 1, item=True)
            position = value_end
            continue
        vr = data[position + 4 : position + 6]
        header = 12 if vr in LONG_VRS else 8
        if header == 12:
            length = struct.unpack_from("<I", data, position + 8)[0]
        else:
            length = struct.unpack_from("<H", data, position + 6)[0]
        yield Span(position, header, length, tag, vr, depth)
        if vr == b"SQ" or (length == UNDEFINED and tag == 0x7FE00010):
            yield from _inside(data, position + header, length, end, depth + 1)
            position = _value_end(data, position + header, length, end, depth + 1)
        else:
            position += header + length


def _inside(data: bytes, start: int, length: int, end: int, depth: int) -> Iterator[Span]:
    stop = end if length == UNDEFINED else min(end, start + length)
    position = start
    while position + 8 <= stop:
        group, number = struct.unpack_from("<HH", data, position)
        tag = (group << 16) | number
        item_length = struct.unpack_from("<I", data, position + 4)[0]
        yield Span(position, 8, item_length, tag, b"", depth)
        if tag == SEQUENCE_END:
            return
        if tag != ITEM:
            return
        if item_length == UNDEFINED:
            inner = list(walk(data, position + 8, stop, depth + 1))
            yield from inner
            position = inner[-1].offset + 8 if inner else stop
        elif data[start - 12 : start - 10] == b"\xe0\x7f":  # pixel data fragments
            position += 8 + item_length
        else:
            yield from walk(data, position + 8, position + 8 + item_length, depth + 1)
            position += 8 + item_length


def _value_end(
    data: bytes, start: int, length: int, end: int, depth: int, *, item: bool = False
) -> int:
    if length != UNDEFINED:
        return start + length
    spans = list(
        walk(data, start, end, depth) if item else _inside(data, start, length, end, depth)
    )
    closing = ITEM_END if item else SEQUENCE_END
    for span in spans:
        if span.tag == closing and span.depth == depth:
            return span.offset + 8
    return end


def top_level(data: bytes) -> list[Span]:
    end = meta_end(data)
    assert end is not None
    return [span for span in walk(data, end, len(data)) if span.depth == 0]


def find(data: bytes, tag: int) -> Span:
    """The top-level element `tag` of a Part 10 file."""
    for span in top_level(data):
        if span.tag == tag:
            return span
    raise KeyError(f"{tag:08X}")


def replace_element(data: bytes, tag: int, new: bytes) -> bytes:
    span = find(data, tag)
    return data[: span.offset] + new + data[span.offset + span.header + span.length :]


def insert_before(data: bytes, tag: int, new: bytes) -> bytes:
    """`new` inserted where top-level element `tag` (or the first after it) begins."""
    for span in top_level(data):
        if span.tag >= tag:
            return data[: span.offset] + new + data[span.offset :]
    return data + new
