"""Encoding, by hand: the corpus needs what encoders refuse to write.

Elements are Explicit VR Little Endian (or implicit) bytes whose declared length need not
match their value; File Meta Information and Part 10 files are put together from them.
"""

import hashlib
import struct

LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF


def uid_for(*parts: str) -> str:
    """A UID (2.25 + 38 digits, 43 characters) from `parts`: the same parts, the same UID."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    number = 10**37 + int.from_bytes(digest[:16], "big") % (9 * 10**37)
    return f"2.25.{number}"


def element(tag: int, vr: bytes, value: bytes, *, length: int | None = None) -> bytes:
    """An Explicit VR Little Endian element; `length` overrides the declared length."""
    declared = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in LONG_VRS:
        return head + b"\0\0" + struct.pack("<I", declared) + value
    return head + struct.pack("<H", declared & 0xFFFF) + value


def uid_value(uid: str) -> bytes:
    """`uid` as a UI value: its bytes (even invalid ones), padded with NUL to an even length."""
    data = uid.encode("utf-8", "surrogateescape")
    return data + b"\0" if len(data) % 2 else data


def file_meta(
    sop_class: str, sop_instance: str, transfer_syntax: str, *, group_length: bool = True
) -> bytes:
    """File Meta Information (PS3.10 7.1), after the preamble and ``DICM``."""
    body = b"".join(
        (
            element(0x00020001, b"OB", b"\0\1"),
            element(0x00020002, b"UI", uid_value(sop_class)),
            element(0x00020003, b"UI", uid_value(sop_instance)),
            element(0x00020010, b"UI", uid_value(transfer_syntax)),
            element(0x00020012, b"UI", uid_value("1.2.826.0.1.3680043.9.9999.77")),
            element(0x00020013, b"SH", b"HOSTILE "),
        )
    )
    if not group_length:
        return body
    return element(0x00020000, b"UL", struct.pack("<I", len(body))) + body


def part10(meta: bytes, dataset: bytes, preamble: bytes = b"\0" * 128) -> bytes:
    return preamble + b"DICM" + meta + dataset
