"""Pixel data must be whole and as large as the image module says (PS3.5 8, A.4).

The value is never read: its element header is read, native data is measured against
Rows x Columns x Samples x Bits Allocated x Frames, and encapsulated fragments are walked by
seeking from item header to item header.
"""

import struct
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.filereader import read_dataset
from pydicom.uid import UID

from storage.errors import InconsistentInstance, InvalidInstance

PIXEL_TAGS = {0x7FE00010: 0, 0x7FE00008: 32, 0x7FE00009: 64}  # tag -> fixed bits (0: header)
_ITEM, _SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE0DD
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UC", b"UR", b"UT"}


@dataclass(frozen=True, slots=True)
class ImageModule:
    """The attributes that fix the size of native pixel data (None when absent)."""

    rows: int | None
    columns: int | None
    bits_allocated: int | None
    samples_per_pixel: int | None
    number_of_frames: int | None
    photometric_interpretation: str | None


def check_pixel_data(
    fp: BinaryIO,
    start: int,
    file_size: int,
    image: ImageModule,
    transfer_syntax: UID,
    *,
    defer_size: int,
) -> tuple[int | None, int | None]:
    """Check the pixel data element at `start`; return (value offset, native length).

    Raises InvalidInstance (truncated, malformed) or InconsistentInstance (wrong size).
    """
    if start >= file_size:
        if image.rows is not None or image.columns is not None:
            raise InconsistentInstance(
                "Rows and Columns describe an image but there is no pixel data (truncated?)"
            )
        return None, None
    fp.seek(start)
    little = transfer_syntax.is_little_endian
    element = fp.read(8)
    if len(element) < 8:
        raise InvalidInstance("the file ends inside the pixel data element header")
    group, number = struct.unpack("<HH" if little else ">HH", element[:4])
    tag = (group << 16) | number
    if tag not in PIXEL_TAGS:
        raise InvalidInstance(f"unexpected element ({group:04X},{number:04X}) before the end")
    if transfer_syntax.is_implicit_VR:
        (length,) = struct.unpack("<I" if little else ">I", element[4:8])
        value_start = start + 8
    elif element[4:6] in _LONG_VRS:
        extra = fp.read(4)
        if len(extra) < 4:
            raise InvalidInstance("the file ends inside the pixel data element header")
        (length,) = struct.unpack("<I" if little else ">I", extra)
        value_start = start + 12
    else:
        raise InconsistentInstance(f"pixel data has the VR {element[4:6]!r}")

    if length == 0xFFFFFFFF:
        if not transfer_syntax.is_encapsulated or tag != 0x7FE00010:
            raise InconsistentInstance("pixel data has an undefined length in a native encoding")
        end = _walk_fragments(fp, value_start, file_size, little)
        native_length = None
    else:
        if transfer_syntax.is_encapsulated and tag == 0x7FE00010:
            raise InconsistentInstance("pixel data has a defined length in a compressed encoding")
        end = value_start + length
        if end > file_size:
            raise InvalidInstance(
                f"pixel data declares {length} bytes but only {file_size - value_start} follow"
            )
        expected = native_length_of(image, PIXEL_TAGS[tag])
        if length < expected:
            raise InconsistentInstance(
                f"pixel data has {length} bytes; Rows, Columns, Samples per Pixel, "
                f"Bits Allocated and Number of Frames need {expected}"
            )
        native_length = length
    if end < file_size:
        _check_trailing(fp, end, file_size, transfer_syntax, defer_size)
    return value_start, native_length


def native_length_of(image: ImageModule, fixed_bits: int = 0) -> int:
    """Bytes that native pixel data must hold (PS3.5 8.1.1, PS3.3 C.7.6.3)."""
    rows, columns = image.rows, image.columns
    bits = fixed_bits or image.bits_allocated
    if rows is None or columns is None or bits is None:
        raise InconsistentInstance("pixel data without valid Rows, Columns and Bits Allocated")
    samples = image.samples_per_pixel or 1
    frames = image.number_of_frames or 1
    if min(rows, columns, bits, samples, frames) < 1:
        raise InconsistentInstance("Rows, Columns, Bits Allocated and frames must be positive")
    if image.photometric_interpretation == "YBR_FULL_422":
        samples = 2  # two samples per pixel after horizontal chroma subsampling
    return (rows * columns * samples * bits * frames + 7) // 8


def _walk_fragments(fp: BinaryIO, position: int, file_size: int, little: bool) -> int:
    """Walk the items of encapsulated pixel data (PS3.5 A.4); return the end offset."""
    layout = "<HHI" if little else ">HHI"
    items = 0
    while True:
        if position + 8 > file_size:
            raise InvalidInstance("encapsulated pixel data ends without a sequence delimiter")
        fp.seek(position)
        group, number, length = struct.unpack(layout, fp.read(8))
        position += 8
        tag = (group << 16) | number
        if tag == _SEQUENCE_DELIMITER:
            if items < 2:
                raise InconsistentInstance("encapsulated pixel data has no compressed fragment")
            return position
        if tag != _ITEM:
            raise InvalidInstance(
                f"encapsulated pixel data has ({group:04X},{number:04X}) where an item belongs"
            )
        if length == 0xFFFFFFFF:
            raise InvalidInstance("an encapsulated pixel data item has an undefined length")
        position += length
        if position > file_size:
            raise InvalidInstance("an encapsulated pixel data item runs past the end of the file")
        items += 1


def _check_trailing(
    fp: BinaryIO, start: int, file_size: int, transfer_syntax: UID, defer_size: int
) -> None:
    """Elements after the pixel data (padding, signatures) must parse too."""
    fp.seek(start)
    read_dataset(
        fp,
        transfer_syntax.is_implicit_VR,
        transfer_syntax.is_little_endian,
        bytelength=file_size - start,
        defer_size=defer_size,
    )
    if fp.tell() > file_size:
        raise InvalidInstance("the elements after the pixel data run past the end of the file")
