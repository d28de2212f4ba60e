"""Family ``bomb``: small files that ask for a great deal once decoded.

A Deflated Explicit VR Little Endian file of about 1 MiB that inflates to 1 GiB,
compressed pixel data (JPEG, JPEG 2000, RLE) declaring 65535 x 65535 pixels, and
encapsulated pixel data whose item structure is broken.
"""

import io
import struct
import zlib

from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from tests.reliability.corpus.encoding import UNDEFINED, element, file_meta, part10
from tests.reliability.corpus.reading import find, insert_before, meta_end, replace_element
from tests.reliability.corpus.sample import Item, Maker

BOMB_INFLATED = 1 << 30
"""What the deflate bomb inflates to: 1 GiB of pixel data from a file of about 1 MiB."""


def deflate_bomb(dataset: bytes, pixel_bytes: int) -> bytes:
    """`dataset` followed by Pixel Data of `pixel_bytes` zeros, raw-deflated.

    The zeros are one compressed megabyte repeated: after a full flush a deflate block
    refers to nothing before it, so the same bytes can follow each other.
    """
    head = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    start = head.compress(dataset + element(0x7FE00010, b"OW", b"", length=pixel_bytes))
    start += head.flush(zlib.Z_FULL_FLUSH)
    block = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    megabyte = block.compress(bytes(1 << 20)) + block.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    finish = end.compress(bytes(pixel_bytes % (1 << 20))) + end.flush(zlib.Z_FINISH)
    return start + megabyte * (pixel_bytes >> 20) + finish


def _deflated(dataset: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(dataset) + packer.flush()


def _jpeg(width: int, height: int) -> bytes:
    """A tiny grey JPEG whose frame header then claims width x height."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _jpeg2000(width: int, height: int) -> bytes:
    """A tiny JPEG 2000 codestream whose SIZ marker then claims width x height."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, "JPEG2000", no_jp2=True)
    data = bytearray(buffer.getvalue())
    siz = data.find(b"\xff\x51")
    data[siz + 6 : siz + 14] = struct.pack(">II", width, height)  # Xsiz, Ysiz
    data[siz + 22 : siz + 30] = struct.pack(">II", width, height)  # XTsiz, YTsiz
    return bytes(data)


def _rle() -> bytes:
    """One RLE segment (PS3.5 G.3) of a few replicate runs: far less than 65535 rows."""
    header = struct.pack("<16I", 1, 64, *([0] * 14))
    return header + b"\x81\x00" * 64


def _encapsulated(
    make: Maker, name: str, syntax: str, value: bytes, *, rows: int, columns: int, frames: int = 1
) -> bytes:
    """The sample in `syntax` with 8-bit `rows` x `columns` and `value` as Pixel Data."""
    data = make.file(name, transfer_syntax=syntax)
    data = replace_element(data, 0x00280010, element(0x00280010, b"US", struct.pack("<H", rows)))
    data = replace_element(data, 0x00280011, element(0x00280011, b"US", struct.pack("<H", columns)))
    for tag, number in ((0x00280100, 8), (0x00280101, 8), (0x00280102, 7)):
        data = replace_element(data, tag, element(tag, b"US", struct.pack("<H", number)))
    if frames != 1:
        text = str(frames).encode()
        text += b" " * (len(text) % 2)
        data = insert_before(data, 0x00280010, element(0x00280008, b"IS", text))
    return replace_element(data, 0x7FE00010, element(0x7FE00010, b"OB", value, length=UNDEFINED))


def _fragments(*fragments: bytes, table: bytes = b"") -> bytes:
    out = struct.pack("<HHI", 0xFFFE, 0xE000, len(table)) + table
    for fragment in fragments:
        out += struct.pack("<HHI", 0xFFFE, 0xE000, len(fragment)) + fragment
    return out + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def bombs(salt: str) -> list[Item]:
    make = Maker(salt, "bomb")
    items = []

    name = "deflate bomb, 1 MiB to 1 GiB"
    sample = make.file(name)  # then 16384 x 32768 x 16 bits: 1 GiB
    sample = replace_element(sample, 0x00280010, element(0x00280010, b"US", b"\0\x40"))
    sample = replace_element(sample, 0x00280011, element(0x00280011, b"US", b"\0\x80"))
    end = meta_end(sample)
    assert end is not None
    pixel_start = find(sample, 0x7FE00010).offset
    meta = file_meta(CTImageStorage, make.uid(name), DeflatedExplicitVRLittleEndian)
    body = deflate_bomb(sample[end:pixel_start], BOMB_INFLATED)
    items.append(make.item(name, part10(meta, body), "refused"))
    name = "deflated, corrupt stream"
    sample = make.file(name)
    end = meta_end(sample)
    assert end is not None
    meta = file_meta(CTImageStorage, make.uid(name), DeflatedExplicitVRLittleEndian)
    packed = bytearray(_deflated(sample[end:]))
    packed[len(packed) // 2 :] = bytes(len(packed) - len(packed) // 2)
    items.append(make.item(name, part10(meta, bytes(packed)), "refused"))
    name = "deflated, a valid small instance"
    sample = make.file(name)
    end = meta_end(sample)
    assert end is not None
    meta = file_meta(CTImageStorage, make.uid(name), DeflatedExplicitVRLittleEndian)
    items.append(make.item(name, part10(meta, _deflated(sample[end:])), "either"))

    huge = 65535
    for name, syntax, fragment in (
        ("JPEG declaring 65535 x 65535", JPEGBaseline8Bit, _jpeg(huge, huge)),
        ("JPEG 2000 declaring 65535 x 65535", JPEG2000Lossless, _jpeg2000(huge, huge)),
        ("RLE for 65535 x 65535", RLELossless, _rle()),
    ):
        data = _encapsulated(make, name, syntax, _fragments(fragment), rows=huge, columns=huge)
        items.append(make.item(name, data, "either", pixels=True))
    name = "JPEG, 1000000 frames declared, one fragment"
    data = _encapsulated(
        make, name, JPEGBaseline8Bit, _fragments(_jpeg(8, 8)), rows=8, columns=8, frames=1_000_000
    )
    items.append(make.item(name, data, "either", pixels=True))
    name = "JPEG, offset table pointing past the end"
    table = struct.pack("<II", 0, 0x7FFFFFF0)
    data = _encapsulated(
        make,
        name,
        JPEGBaseline8Bit,
        _fragments(_jpeg(8, 8), _jpeg(8, 8), table=table),
        rows=8,
        columns=8,
        frames=2,
    )
    items.append(make.item(name, data, "either", pixels=True))
    name = "JPEG, garbage fragment"
    data = _encapsulated(
        make,
        name,
        JPEGBaseline8Bit,
        _fragments(b"\xff\xd8" + bytes(range(256)) * 4),
        rows=8,
        columns=8,
    )
    items.append(make.item(name, data, "either", pixels=True))

    broken = {
        "encapsulated, no sequence delimiter": _fragments(_jpeg(8, 8))[:-8],
        "encapsulated, an element where an item belongs": struct.pack("<HHI", 0xFFFE, 0xE000, 0)
        + element(0x00100010, b"PN", b"Nguyen^Van")
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0),
        "encapsulated, item length past the end": struct.pack("<HHI", 0xFFFE, 0xE000, 0)
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0x7FFFFFF0)
        + b"\xff\xd8",
        "encapsulated, item of undefined length": struct.pack("<HHI", 0xFFFE, 0xE000, 0)
        + struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED)
        + _jpeg(8, 8)
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0),
        "encapsulated, offset table only": _fragments(),
        "encapsulated, nothing at all": b"",
    }
    for name, value in broken.items():
        data = _encapsulated(make, name, JPEGBaseline8Bit, value, rows=8, columns=8)
        items.append(make.item(name, data, "refused"))
    name = "encapsulated, defined length"
    data = make.file(name, transfer_syntax=JPEG2000Lossless)
    data = replace_element(
        data, 0x7FE00010, element(0x7FE00010, b"OB", encapsulate([_jpeg2000(8, 8)]))
    )
    items.append(make.item(name, data, "refused"))
    return items
