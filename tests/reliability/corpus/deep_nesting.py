"""Family ``nesting``: sequences of undefined length nested up to 10,000 deep, ended or not."""

import struct

from tests.reliability.corpus.encoding import UNDEFINED, element
from tests.reliability.corpus.reading import find, insert_before
from tests.reliability.corpus.sample import Expect, Item, Maker

_CONTENT_SEQUENCE = 0x0040A730
_VALUE_TYPE = 0x0040A040


def nested(depth: int, *, defined: bool = False, ended: bool = True) -> bytes:
    """Content Sequence in an item of Content Sequence... `depth` times, as explicit LE."""
    inner = element(_VALUE_TYPE, b"CS", b"TEXT")
    if defined:
        for _ in range(depth):
            item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
            inner = element(_CONTENT_SEQUENCE, b"SQ", item)
        return inner
    head = element(_CONTENT_SEQUENCE, b"SQ", b"", length=UNDEFINED) + struct.pack(
        "<HHI", 0xFFFE, 0xE000, UNDEFINED
    )
    tail = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return head * depth + inner + (tail * depth if ended else b"")


def deep_nesting(salt: str) -> list[Item]:
    make = Maker(salt, "nesting")
    items = []
    for depth in (8, 40, 120, 180, 240, 1000, 10_000):
        name = f"{depth} levels, ended"
        data = insert_before(make.file(name), 0x7FE00010, nested(depth))
        expect: Expect = "stored" if depth <= 8 else "either"
        items.append(make.item(name, data, expect, pixels=depth <= 240))
    name = "10000 levels of defined length"
    data = insert_before(make.file(name), 0x7FE00010, nested(10_000, defined=True))
    items.append(make.item(name, data, "either"))
    for depth in (40, 10_000):
        name = f"{depth} levels, never ended"
        data = make.file(name)
        data = data[: find(data, 0x00280002).offset] + nested(depth, ended=False)
        items.append(make.item(name, data, "refused"))
    return items
