"""Frames out of a stored instance without reading more of it than they need.

Native pixel data: each frame is a slice of the blob at a computed offset, one ranged read
apiece. Encapsulated (compressed) pixel data: the items after the pixel data value offset
are read and split into frames by pydicom (Basic Offset Table, Extended Offset Table, or one
fragment per frame).
"""

import io
import struct
from collections.abc import Callable

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame

from storage import InstanceDetails
from viewer_api.errors import BadRequest, NotAcceptable, NotFoundError

ReadRange = Callable[[int, int], bytes]
_ITEM_TAG = 0xE000FFFE  # (FFFE,E000) read as one little-endian 32-bit number


def parse_frame_list(text: str) -> list[int]:
    """``1,3,5`` → [1, 3, 5]; raises BadRequest for anything else."""
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        raise BadRequest(f"frame list {text!r} is not comma-separated frame numbers") from None
    if not numbers or min(numbers) < 1:
        raise BadRequest("frame numbers start at 1")
    return numbers


def frame_size(header: Dataset) -> int:
    rows, columns = int(header.get("Rows") or 0), int(header.get("Columns") or 0)
    samples = int(header.get("SamplesPerPixel") or 1)
    bits = int(header.get("BitsAllocated") or 0)
    if header.get("PhotometricInterpretation") == "YBR_FULL_422":
        samples = 2
    if bits % 8:
        raise NotAcceptable(f"frames of {bits}-bit pixel data cannot be cut apart")
    return rows * columns * samples * bits // 8


def read_frames(
    instance: InstanceDetails, header: Dataset, numbers: list[int], read: ReadRange
) -> list[bytes]:
    """The frames `numbers` (1-based) of `instance`, as stored.

    Raises:
        NotFoundError: the instance has no pixel data or no such frame.
    """
    if instance.pixel_data_offset is None:
        raise NotFoundError(f"instance {instance.sop_instance_uid} has no pixel data")
    count = instance.number_of_frames or 1
    missing = [n for n in numbers if n > count]
    if missing:
        raise NotFoundError(
            f"instance {instance.sop_instance_uid} has {count} frame(s), not frame {missing[0]}"
        )
    offset = instance.pixel_data_offset
    if instance.pixel_data_length is not None:  # native
        size = frame_size(header)
        return [read(offset + (n - 1) * size, size) for n in numbers]
    if count > 1:
        starts = _frame_starts(header, offset, read)
        if starts is not None:  # each frame read on its own, by the offset table
            end = instance.size - 8  # the sequence delimiter item
            bounds = [*starts, end]
            return [_fragments(read(bounds[n - 1], bounds[n] - bounds[n - 1])) for n in numbers]
    encapsulated = read(offset, instance.size - offset)
    try:
        return [get_frame(encapsulated, n - 1, number_of_frames=count) for n in numbers]
    except ValueError as exc:
        raise NotAcceptable(f"the compressed frames cannot be told apart: {exc}") from None


def _frame_starts(header: Dataset, offset: int, read: ReadRange) -> list[int] | None:
    """Where each frame's first fragment item starts in the blob, from the Extended or the
    Basic Offset Table; None when there is neither (then the fragments must be walked)."""
    item_tag, length = struct.unpack("<II", read(offset, 8))
    if item_tag != _ITEM_TAG:
        return None
    first = offset + 8 + length
    if "ExtendedOffsetTable" in header:
        table = bytes(header.ExtendedOffsetTable)
        relative = struct.unpack(f"<{len(table) // 8}Q", table)
    elif length:
        table = read(offset + 8, length)
        relative = struct.unpack(f"<{len(table) // 4}I", table)
    else:
        return None
    return [first + r for r in relative]


def _fragments(region: bytes) -> bytes:
    """The concatenated values of the fragment items in `region`."""
    out = bytearray()
    position = 0
    while position + 8 <= len(region):
        item_tag, length = struct.unpack_from("<II", region, position)
        if item_tag != _ITEM_TAG:
            break
        out += region[position + 8 : position + 8 + length]
        position += 8 + length
    return bytes(out)


def frames_of_file(data: bytes, numbers: list[int]) -> list[bytes]:
    """Frames of a whole Part 10 file held in memory (a transcoded rendition)."""
    dataset = dcmread(io.BytesIO(data), force=True)
    count = int(dataset.get("NumberOfFrames") or 1)
    missing = [n for n in numbers if n > count]
    if missing:
        raise NotFoundError(f"the instance has {count} frame(s), not frame {missing[0]}")
    if not dataset.file_meta.TransferSyntaxUID.is_compressed:
        size = frame_size(dataset)
        pixels = dataset.PixelData
        return [pixels[(n - 1) * size : n * size] for n in numbers]
    return [get_frame(dataset.PixelData, n - 1, number_of_frames=count) for n in numbers]
