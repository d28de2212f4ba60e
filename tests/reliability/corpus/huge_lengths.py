"""Family ``huge-length``: lengths no file could hold.

0xFFFFFFF0 on Pixel Data and on small elements, 0xFFFFFFFF on elements that are not
sequences, image sizes no file could hold.
"""

import struct

from pydicom.uid import ImplicitVRLittleEndian

from tests.reliability.corpus.encoding import UNDEFINED, element
from tests.reliability.corpus.reading import insert_before, meta_end, replace_element
from tests.reliability.corpus.sample import Expect, Item, Maker


def huge_lengths(salt: str) -> list[Item]:
    make = Maker(salt, "huge-length")
    items = []

    def edit(name: str, tag: int, new: bytes, expect: Expect = "refused", **kw: object) -> None:
        data = make.file(name, **kw)
        items.append(make.item(name, replace_element(data, tag, new), expect))

    pixels = bytes(512)
    edit(
        "Pixel Data of 0xFFFFFFF0",
        0x7FE00010,
        element(0x7FE00010, b"OW", pixels, length=0xFFFFFFF0),
    )
    edit(
        "Pixel Data of 0x7FFFFFF0",
        0x7FE00010,
        element(0x7FE00010, b"OW", pixels, length=0x7FFFFFF0),
    )
    edit(
        "Pixel Data of 0xFFFFFFFF, native",
        0x7FE00010,
        element(0x7FE00010, b"OW", pixels, length=UNDEFINED),
    )
    edit("small UT of 0xFFFFFFF0", 0x00081030, element(0x00081030, b"UT", b"CT", length=0xFFFFFFF0))
    edit("small UT of 0xFFFFFFFF", 0x00081030, element(0x00081030, b"UT", b"CT", length=UNDEFINED))
    edit(
        "OB of 0xFFFFFFFF ended by a delimiter",
        0x00081030,
        element(
            0x00081030, b"OB", b"CT" + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0), length=UNDEFINED
        ),
        "refused",
    )
    implicit = make.file(
        "implicit: Patient Name of 0xFFFFFFF0", transfer_syntax=ImplicitVRLittleEndian
    )
    items.append(
        _implicit_edit(
            make, "implicit: Patient Name of 0xFFFFFFF0", implicit, 0x00100010, 0xFFFFFFF0
        )
    )
    implicit = make.file(
        "implicit: Patient Name of 0xFFFFFFFF", transfer_syntax=ImplicitVRLittleEndian
    )
    items.append(
        _implicit_edit(
            make, "implicit: Patient Name of 0xFFFFFFFF", implicit, 0x00100010, UNDEFINED
        )
    )
    implicit = make.file(
        "implicit: Pixel Data of 0xFFFFFFF0", transfer_syntax=ImplicitVRLittleEndian
    )
    items.append(
        _implicit_edit(make, "implicit: Pixel Data of 0xFFFFFFF0", implicit, 0x7FE00010, 0xFFFFFFF0)
    )
    name = "65535 x 65535 x 100000 frames, native"
    data = make.file(name)
    data = replace_element(data, 0x00280010, element(0x00280010, b"US", b"\xff\xff"))
    data = replace_element(data, 0x00280011, element(0x00280011, b"US", b"\xff\xff"))
    data = insert_before(data, 0x00280010, element(0x00280008, b"IS", b"100000"))
    items.append(make.item(name, data, "refused"))
    name = "Rows of 0"
    data = make.file(name)
    data = replace_element(data, 0x00280010, element(0x00280010, b"US", b"\0\0"))
    items.append(make.item(name, data, "refused"))
    for frames in (b"0 ", b"-1", b"1e9 ", b"abc "):
        name = f"Number of Frames {frames.decode().strip()}"
        data = insert_before(make.file(name), 0x00280010, element(0x00280008, b"IS", frames))
        items.append(make.item(name, data, "either"))
    return items


def _implicit_edit(make: Maker, name: str, data: bytes, tag: int, length: int) -> Item:
    """An implicit VR file whose element `tag` declares `length` (its value kept)."""
    end = meta_end(data)
    assert end is not None
    position = end
    while position + 8 <= len(data):
        group, number, declared = struct.unpack_from("<HHI", data, position)
        if (group << 16) | number == tag:
            data = data[: position + 4] + struct.pack("<I", length) + data[position + 8 :]
            break
        if declared == UNDEFINED:  # the sample's only such sequence has no nested ones
            position = data.index(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0), position) + 8
        else:
            position += 8 + declared
    else:
        raise KeyError(f"{tag:08X}")
    return make.item(name, data, "refused")
