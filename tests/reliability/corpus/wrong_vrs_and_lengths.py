"""Family ``vr-length``: wrong VRs and wrong lengths.

Odd lengths, lengths past the end or off by two, VR bytes that are garbage, explicit data
under an implicit transfer syntax and back.
"""

import struct

from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.reliability.corpus.encoding import element
from tests.reliability.corpus.reading import find, insert_before, replace_element
from tests.reliability.corpus.sample import Expect, Item, Maker, with_dataset_syntax


def wrong_vrs_and_lengths(salt: str) -> list[Item]:
    make = Maker(salt, "vr-length")
    items = []

    def edit(name: str, tag: int, new: bytes, expect: Expect = "either") -> None:
        data = make.file(name)
        items.append(make.item(name, replace_element(data, tag, new), expect))

    edit("odd length SH", 0x00200010, element(0x00200010, b"SH", b"1"))
    edit("odd length US Rows", 0x00280010, element(0x00280010, b"US", b"\x10\x00\x00"))
    edit("empty US Rows", 0x00280010, element(0x00280010, b"US", b""))
    edit("US Rows of 4 bytes", 0x00280010, element(0x00280010, b"US", b"\x10\x00\x10\x00"))
    edit(
        "short-VR length past the end",
        0x00100010,
        element(0x00100010, b"PN", b"Nguyen^Van", length=0xFFFF),
        "refused",
    )
    edit(
        "long-VR length past the end",
        0x00081030,
        element(0x00081030, b"UT", b"Head CT", length=100_000),
        "refused",
    )
    edit("length 2 too long", 0x00080020, element(0x00080020, b"DA", b"20261120", length=10))
    edit("length 2 too short", 0x00080020, element(0x00080020, b"DA", b"20261120", length=6))
    for label, vr in (
        ("NUL", b"\0\0"),
        ("0xFFFE", b"\xff\xfe"),
        ("lower case", b"lo"),
        ("digits", b"12"),
        ("unknown letters", b"QQ"),
    ):
        data = make.file(f"garbage VR {label}")
        span = find(data, 0x00100020)  # Patient ID, LO
        data = data[: span.offset + 4] + vr + data[span.offset + 6 :]
        items.append(make.item(f"garbage VR {label}", data, "either"))
    edit(
        "text declared SQ",
        0x00081030,
        element(0x00081030, b"SQ", b"Chup CT so nao  "),
    )
    edit("Rows declared OB", 0x00280010, element(0x00280010, b"OB", b"\x10\x00"))
    edit(
        "sequence of garbage items",
        0x00081110,
        element(0x00081110, b"SQ", struct.pack("<HHI", 0xFFFE, 0xE000, 6) + b"garbage!"),
    )
    edit(
        "sequence shorter than its item",
        0x00081110,
        element(0x00081110, b"SQ", struct.pack("<HHI", 0xFFFE, 0xE000, 40) + b"\0" * 8),
    )
    edit(
        "item length past its sequence",
        0x00081110,
        element(0x00081110, b"SQ", struct.pack("<HHI", 0xFFFE, 0xE000, 0x7FFFFFF0)),
    )
    data = make.file("item tag at the top level")
    data = insert_before(data, 0x00100010, struct.pack("<HHI", 0xFFFE, 0xE000, 4) + b"abcd")
    items.append(make.item("item tag at the top level", data, "either"))
    data = make.file("sequence delimiter at the top level")
    data = insert_before(data, 0x00100010, struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    items.append(make.item("sequence delimiter at the top level", data, "either"))
    data = make.file("elements out of order")
    first, second = find(data, 0x00100010), find(data, 0x00100020)
    a = data[first.offset : first.offset + first.header + first.length]
    b = data[second.offset : second.offset + second.header + second.length]
    data = data[: first.offset] + b + a + data[second.offset + len(b) :]
    items.append(make.item("elements out of order", data, "either"))
    data = make.file("element twice")
    name_span = find(data, 0x00100010)
    name_bytes = data[name_span.offset : name_span.offset + name_span.header + name_span.length]
    data = data[: name_span.offset] + name_bytes + data[name_span.offset :]
    items.append(make.item("element twice", data, "either"))

    # Explicit and implicit encodings swapped under the File Meta Information.
    implicit = make.file("implicit data, explicit meta", transfer_syntax=ImplicitVRLittleEndian)
    items.append(
        make.item(
            "implicit data, explicit meta",
            with_dataset_syntax(implicit, ExplicitVRLittleEndian),
            "either",
        )
    )
    explicit = make.file("explicit data, implicit meta")
    items.append(
        make.item(
            "explicit data, implicit meta",
            with_dataset_syntax(explicit, ImplicitVRLittleEndian),
            "either",
        )
    )
    little = make.file("little endian data, big endian meta")
    items.append(
        make.item(
            "little endian data, big endian meta",
            with_dataset_syntax(little, ExplicitVRBigEndian),
            "either",
        )
    )
    return items
