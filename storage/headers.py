"""Read and check the header of a stored instance without touching its pixel data.

``read_header`` parses a Part 10 file up to its pixel data, checks that the file is whole
and consistent (the lengths it declares, the UIDs it needs, the pixel data size that Rows,
Columns and Bits Allocated imply), and returns the values the index keeps. Pixel data is
never read into memory: its element header is read and its fragments are walked by seeking.

Failures raise :class:`~storage.errors.InvalidInstance` (the bytes are not a readable
instance) or :class:`~storage.errors.InconsistentInstance` (readable, but it contradicts
itself).
"""

import contextlib
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import config, dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian

from storage.attributes import Attribute, Kind, Level, stored_at
from storage.errors import InconsistentInstance, InvalidInstance
from storage.names import folded_key, upper_key
from storage.uids import uid_problem

PREAMBLE_LENGTH = 128
DEFER_SIZE = 64 * 1024
"""Element values longer than this are not read while parsing the header."""
MAX_HEADER_BYTES = 256 * 1024
"""Headers longer than this are not copied into the index (they are read from the blob)."""
MAX_INDEXED_TEXT = 256
"""Indexed text values are cut to this length (PostgreSQL b-tree entries are bounded)."""

# The archive checks what it relies on (UIDs, lengths, pixel data size) itself. pydicom's
# per-value checks on read would only add warnings, process-wide and not thread-safe to
# silence locally, for values the archive stores as received anyway.
config.settings.reading_validation_mode = config.IGNORE

_PIXEL_TAGS = {0x7FE00010: 0, 0x7FE00008: 32, 0x7FE00009: 64}  # tag -> fixed bits, 0 = from header
_ITEM, _SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE0DD
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UC", b"UR", b"UT"}
_PARSE_ERRORS = (
    InvalidDicomError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    NotImplementedError,
    OverflowError,
    RecursionError,
    MemoryError,
    struct.error,
    OSError,
)


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    """What the index needs of one instance, read from its header."""

    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    values: dict[Level, dict[str, Any]]
    """Index column → normalised value, per level (person names with their match keys)."""
    header_bytes: bytes | None
    """zlib-compressed bytes after the preamble up to the pixel data, or None when too large."""
    pixel_data_offset: int | None
    """Offset of the pixel data value in the file, None when there is none."""
    pixel_data_length: int | None
    """Length of native pixel data; None when encapsulated or absent."""


def read_header(path: Path, *, inflate_limit: int | None = None) -> InstanceHeader:
    """Parse and check the Part 10 file at `path`.

    Args:
        path: a file with a 128-byte preamble, ``DICM`` and File Meta Information.
        inflate_limit: the most bytes a Deflated Explicit VR Little Endian dataset may
            inflate to; ``None`` refuses deflated files altogether.

    Raises:
        InvalidInstance: the file cannot be parsed, or is truncated.
        InconsistentInstance: the file contradicts itself or lacks a required UID.
    """
    try:
        meta = _read_meta(path)
    except _PARSE_ERRORS as exc:
        raise InvalidInstance(f"File Meta Information cannot be read: {_describe(exc)}") from None
    transfer_syntax = _transfer_syntax(meta)
    if transfer_syntax.is_deflated:
        if inflate_limit is None:
            raise InvalidInstance("the Deflated transfer syntax is not accepted by this archive")
        with _inflated(path, meta, inflate_limit) as inflated:
            header = _read_checked(inflated, meta, UID(ExplicitVRLittleEndian))
        return _without_offsets(header, transfer_syntax)
    return _read_checked(path, meta, transfer_syntax)


def _read_meta(path: Path) -> FileMetaDataset:
    return read_file_meta_info(path)


def _transfer_syntax(meta: FileMetaDataset) -> UID:
    value = meta.get("TransferSyntaxUID")
    if not value:
        raise InvalidInstance("File Meta Information has no Transfer Syntax UID")
    uid = UID(str(value).strip("\0 "))
    if problem := uid_problem(uid):
        raise InvalidInstance(f"Transfer Syntax UID {uid!r} {problem}")
    if not uid.is_transfer_syntax:
        raise InvalidInstance(f"Transfer Syntax UID {uid} is not a known transfer syntax")
    return uid


def _read_checked(path: Path, meta: FileMetaDataset, transfer_syntax: UID) -> InstanceHeader:
    file_size = path.stat().st_size
    with path.open("rb") as fp:
        try:
            dataset = dcmread(fp, stop_before_pixels=True, defer_size=DEFER_SIZE)
            pixel_start = fp.tell()
            if pixel_start > file_size:
                raise InvalidInstance(
                    f"the dataset runs past the end of the file ({file_size} bytes)"
                )
            _check_deferred_lengths(dataset, file_size)
            offset, length = _check_pixel_data(fp, file_size, dataset, transfer_syntax)
            uids = _required_uids(dataset, meta)
            values = _extract(dataset)
            header_bytes = _header_bytes(fp, pixel_start)
        except (InvalidInstance, InconsistentInstance):
            raise
        except _PARSE_ERRORS as exc:
            raise InvalidInstance(f"dataset cannot be parsed: {_describe(exc)}") from None
    return InstanceHeader(
        transfer_syntax_uid=str(transfer_syntax),
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        values=values,
        header_bytes=header_bytes,
        pixel_data_offset=offset,
        pixel_data_length=length,
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def _check_deferred_lengths(dataset: Dataset, file_size: int) -> None:
    """Values too large to read while parsing must still lie inside the file."""
    for tag in dataset.keys():  # noqa: SIM118 - iterating a Dataset yields elements
        raw = dataset.get_item(tag)
        if getattr(raw, "value", True) is not None:
            continue
        tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
        if isinstance(tell, int) and isinstance(length, int) and tell + length > file_size:
            raise InvalidInstance(
                f"element {tag} declares {length} bytes but only {file_size - tell} remain"
            )


def _required_uids(dataset: Dataset, meta: FileMetaDataset) -> dict[str, str]:
    uids: dict[str, str] = {}
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = dataset.get(keyword)
        if value is None or str(value).strip("\0 ") == "":
            raise InconsistentInstance(f"the dataset has no {keyword}")
        uid = str(value).strip("\0 ")
        if problem := uid_problem(uid):
            raise InconsistentInstance(f"{keyword} {uid[:70]!r} {problem}")
        uids[keyword] = uid
    for meta_keyword, keyword in (
        ("MediaStorageSOPClassUID", "SOPClassUID"),
        ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
    ):
        declared = str(meta.get(meta_keyword, "")).strip("\0 ")
        if declared and declared != uids[keyword]:
            raise InconsistentInstance(
                f"{meta_keyword} {declared} does not match the dataset's {keyword} {uids[keyword]}"
            )
    return uids


def _check_pixel_data(
    fp: BinaryIO, file_size: int, dataset: Dataset, transfer_syntax: UID
) -> tuple[int | None, int | None]:
    """Check the pixel data element at the file position; return (value offset, length)."""
    start = fp.tell()
    if start >= file_size:
        return None, None
    little = transfer_syntax.is_little_endian
    element = fp.read(8)
    if len(element) < 8:
        raise InvalidInstance("the file ends inside the pixel data element header")
    group, number = struct.unpack("<HH" if little else ">HH", element[:4])
    tag = (group << 16) | number
    if tag not in _PIXEL_TAGS:
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
        stored_length = None
    else:
        if transfer_syntax.is_encapsulated and tag == 0x7FE00010:
            raise InconsistentInstance("pixel data has a defined length in a compressed encoding")
        end = value_start + length
        if end > file_size:
            raise InvalidInstance(
                f"pixel data declares {length} bytes but only {file_size - value_start} follow"
            )
        expected = _native_pixel_length(dataset, _PIXEL_TAGS[tag])
        if length < expected:
            raise InconsistentInstance(
                f"pixel data has {length} bytes; Rows, Columns, Samples per Pixel, "
                f"Bits Allocated and Number of Frames need {expected}"
            )
        stored_length = length
    if end < file_size:
        _check_trailing(fp, end, file_size, transfer_syntax)
    return value_start, stored_length


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


def _native_pixel_length(dataset: Dataset, fixed_bits: int) -> int:
    """Bytes that native pixel data must hold (PS3.5 8.1.1, PS3.3 C.7.6.3)."""
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        bits = fixed_bits or int(dataset.BitsAllocated)
        samples = int(dataset.get("SamplesPerPixel", 1) or 1)
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise InconsistentInstance(
            "pixel data without valid Rows, Columns and Bits Allocated"
        ) from None
    if min(rows, columns, bits, samples, frames) < 1:
        raise InconsistentInstance("Rows, Columns, Bits Allocated and frames must be positive")
    if str(dataset.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        samples = 2  # two samples per pixel after horizontal chroma subsampling
    return (rows * columns * samples * bits * frames + 7) // 8


def _check_trailing(fp: BinaryIO, start: int, file_size: int, transfer_syntax: UID) -> None:
    """Elements after the pixel data (padding, signatures) must parse too."""
    fp.seek(start)
    read_dataset(
        fp,
        transfer_syntax.is_implicit_VR,
        transfer_syntax.is_little_endian,
        bytelength=file_size - start,
        defer_size=DEFER_SIZE,
    )
    if fp.tell() > file_size:
        raise InvalidInstance("the elements after the pixel data run past the end of the file")


def _header_bytes(fp: BinaryIO, pixel_start: int) -> bytes | None:
    length = pixel_start - PREAMBLE_LENGTH
    if length > MAX_HEADER_BYTES:
        return None
    fp.seek(PREAMBLE_LENGTH)
    return zlib.compress(fp.read(length), 6)


_EXTRACTED: dict[Level, list[tuple[Attribute, int]]] = {
    level: [(a, int(tag_for_keyword(a.keyword) or 0)) for a in stored_at(level)] for level in Level
}


def _extract(dataset: Dataset) -> dict[Level, dict[str, Any]]:
    values: dict[Level, dict[str, Any]] = {}
    for level, attributes in _EXTRACTED.items():
        row: dict[str, Any] = {}
        for attribute, tag in attributes:
            value = _normalise(attribute, _get(dataset, tag))
            row[attribute.column] = value
            if attribute.kind is Kind.NAME:
                row[f"{attribute.column}_upper"] = upper_key(value) if value else None
                row[f"{attribute.column}_folded"] = folded_key(value) if value else None
        values[level] = row
    return values


def _get(dataset: Dataset, tag: int) -> Any:
    if tag not in dataset:
        return None
    try:
        return dataset[tag].value
    except _PARSE_ERRORS:
        return None


def _normalise(attribute: Attribute, value: Any) -> Any:
    """Turn a pydicom value into what the index column holds (None when empty or invalid)."""
    if value is None or value == "":
        return None
    kind = attribute.kind
    if attribute.multi and not isinstance(value, str | bytes):
        try:
            parts = [str(v).strip() for v in value]
        except TypeError:
            parts = [str(value).strip()]
        joined = "\\".join(p for p in parts if p)
        return joined[:MAX_INDEXED_TEXT] or None
    if kind is Kind.INT:
        return _to_int(value)
    if kind is Kind.DECIMAL:
        return _to_float(value)
    text = str(value).strip("\0 ")
    if kind is Kind.DATE:
        return normalise_date(text)
    if kind is Kind.TIME:
        return normalise_time(text)
    return text[:MAX_INDEXED_TEXT] or None


def _to_int(value: Any) -> int | None:
    try:
        number = int(float(str(value).strip()))
    except (TypeError, ValueError, OverflowError):
        return None
    return number if -(2**63) < number < 2**63 else None


def _to_float(value: Any) -> float | None:
    try:
        return float(str(value).strip())
    except (TypeError, ValueError, OverflowError):
        return None


def normalise_date(text: str) -> str | None:
    """``YYYYMMDD`` from DA, accepting the ACR-NEMA ``YYYY.MM.DD`` form; None if invalid."""
    text = text.strip().replace(".", "")
    return text if len(text) == 8 and text.isdigit() else None


def normalise_time(text: str) -> str | None:
    """``HHMMSS[.FFFFFF]`` from TM (partial times padded with zeros); None if invalid."""
    text = text.strip().replace(":", "")
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        return None
    whole = whole.ljust(6, "0")
    return f"{whole}.{fraction[:6]}" if fraction else whole


def _without_offsets(header: InstanceHeader, transfer_syntax: UID) -> InstanceHeader:
    """A deflated file's offsets refer to its inflated copy, so the index keeps none."""
    return InstanceHeader(
        transfer_syntax_uid=str(transfer_syntax),
        sop_class_uid=header.sop_class_uid,
        sop_instance_uid=header.sop_instance_uid,
        study_instance_uid=header.study_instance_uid,
        series_instance_uid=header.series_instance_uid,
        values=header.values,
        header_bytes=None,
        pixel_data_offset=None,
        pixel_data_length=None,
    )


@contextlib.contextmanager
def _inflated(path: Path, meta: FileMetaDataset, limit: int) -> Iterator[Path]:
    """Inflate a deflated dataset next to `path`, refusing to grow past `limit` bytes."""
    target = path.with_name(path.name + ".inflated")
    dataset_offset = _dataset_offset(path)
    explicit_meta = FileMetaDataset(meta)
    explicit_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    try:
        with path.open("rb") as source, target.open("wb") as out:
            out.write(b"\0" * PREAMBLE_LENGTH + b"DICM")
            write_file_meta_info(out, explicit_meta)  # type: ignore[arg-type]
            source.seek(dataset_offset)
            _inflate_capped(source, out, limit)
        yield target
    finally:
        target.unlink(missing_ok=True)


def _dataset_offset(path: Path) -> int:
    """Offset of the first dataset element after the File Meta Information."""
    with path.open("rb") as fp:
        fp.seek(PREAMBLE_LENGTH + 4)
        while True:
            element = fp.read(8)
            if len(element) < 8:
                raise InvalidInstance("the file ends inside the File Meta Information")
            group, _ = struct.unpack("<HH", element[:4])
            if group != 0x0002:
                return fp.tell() - 8
            if element[4:6] in _LONG_VRS:
                (length,) = struct.unpack("<I", fp.read(4))
            else:
                (length,) = struct.unpack("<H", element[6:8])
            fp.seek(length, 1)


def _inflate_capped(source: BinaryIO, out: BinaryIO, limit: int) -> None:
    """Inflate raw deflate data in bounded steps, so a bomb is stopped at `limit` bytes."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    written = 0
    while not inflater.eof:
        data = inflater.unconsumed_tail or source.read(1 << 20)
        if not data:
            break
        try:
            piece = inflater.decompress(data, 1 << 20)
        except zlib.error as exc:
            raise InvalidInstance(f"deflated dataset is corrupt: {exc}") from None
        written += len(piece)
        if written > limit:
            raise InvalidInstance(f"deflated dataset inflates past the limit of {limit} bytes")
        out.write(piece)
    tail = inflater.flush()
    if written + len(tail) > limit:
        raise InvalidInstance(f"deflated dataset inflates past the limit of {limit} bytes")
    out.write(tail)
