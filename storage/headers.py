"""Read and check the header of an instance on its way in, without touching its pixel data.

``read_header`` reads a Part 10 file up to its pixel data, checks that the file is whole and
consistent (the lengths it declares, the UIDs it needs, the pixel data size that Rows,
Columns and Bits Allocated imply), and returns the values the index keeps.

Two readers feed the same checks: :mod:`storage.elements` (fast, for the common Little
Endian file) and pydicom (for everything else: deflate, big endian, the unusual). Failures
raise :class:`~storage.errors.InvalidInstance` (not a readable instance) or
:class:`~storage.errors.InconsistentInstance` (readable, but it contradicts itself).
"""

import os
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import config, dcmread
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import read_file_meta_info, read_sequence
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.valuerep import PersonName

from storage.attributes import Attribute, Kind, Level, stored_at
from storage.citizen_ids import OTHER_PATIENT_IDS_SEQUENCE, CitizenIdSource, citizen_id
from storage.deflate import inflated
from storage.elements import IMPLICIT_LE, scan
from storage.errors import InconsistentInstance, InvalidInstance
from storage.names import folded_key, upper_key
from storage.pixels import ImageModule, check_pixel_data
from storage.uids import uid_problem

PREAMBLE_LENGTH = 128
DEFER_SIZE = 64 * 1024
"""Element values longer than this are not read by pydicom while parsing the header."""
FAST_READ = 64 * 1024
"""Bytes read first for the fast reader; most headers end well within them."""
MAX_HEADER_BYTES = 256 * 1024
"""Headers longer than this are not copied into the index (they are read from the blob)."""
MAX_INDEXED_TEXT = 256
"""Indexed text values are cut to this length (PostgreSQL b-tree entries are bounded)."""

# The archive checks what it relies on (UIDs, lengths, pixel data size) itself. pydicom's
# per-value checks on read would only add warnings, process-wide and not thread-safe to
# silence locally, for values the archive stores as received anyway.
config.settings.reading_validation_mode = config.IGNORE

PARSE_ERRORS = (
    InvalidDicomError,
    BytesLengthException,  # a US/UL/FL... value whose length is no multiple of its size
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
    LookupError,
    UnicodeError,
)


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return int(tag)


_CHARSET = _tag("SpecificCharacterSet")
_REQUIRED = {
    kw: _tag(kw)
    for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
}
_MEDIA_STORAGE = {0x00020002: "SOPClassUID", 0x00020003: "SOPInstanceUID"}
_IMAGE = {
    kw: _tag(kw)
    for kw in (
        "Rows",
        "Columns",
        "BitsAllocated",
        "SamplesPerPixel",
        "NumberOfFrames",
        "PhotometricInterpretation",
    )
}
_EXTRACTED: dict[Level, list[tuple[Attribute, int]]] = {
    level: [(a, _tag(a.keyword)) for a in stored_at(level)] for level in Level
}
_WANTED = frozenset(
    {_CHARSET, OTHER_PATIENT_IDS_SEQUENCE, *_REQUIRED.values(), *_IMAGE.values()}
    | {tag for attributes in _EXTRACTED.values() for _, tag in attributes}
)

_CITIZEN_IDS = CitizenIdSource()

Values = Callable[[int], Any]
"""A value by tag, as pydicom gives it: str, list of str, int, PersonName, or None."""


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    """What the index needs of one instance, read from its header."""

    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    values: dict[Level, dict[str, Any]]
    """Index column → normalised value, per level (person names with their match keys; the
    patient's ``citizen_id`` too)."""
    header_bytes: bytes | None
    """zlib-compressed bytes after the preamble up to the pixel data, or None when too large."""
    pixel_data_offset: int | None
    """Offset of the pixel data value in the file, None when there is none."""
    pixel_data_length: int | None
    """Length of native pixel data; None when encapsulated or absent."""


def read_header(
    path: Path,
    *,
    inflate_limit: int | None = None,
    citizen_ids: CitizenIdSource = _CITIZEN_IDS,
) -> InstanceHeader:
    """Read and check the Part 10 file at `path`.

    Args:
        path: a file with a 128-byte preamble, ``DICM`` and File Meta Information.
        inflate_limit: the most bytes a Deflated Explicit VR Little Endian dataset may
            inflate to; ``None`` refuses deflated files altogether.
        citizen_ids: where the citizen identity number is (the default issuers, no tag).

    Raises:
        InvalidInstance: the file cannot be parsed, or is truncated.
        InconsistentInstance: the file contradicts itself or lacks a required UID.
    """
    with path.open("rb") as fp:
        file_size = os.fstat(fp.fileno()).st_size
        head = fp.read(FAST_READ)
        wanted = _WANTED if citizen_ids.tag is None else _WANTED | {citizen_ids.tag}
        scanned = scan(head, file_size, wanted)
        if scanned is None and len(head) < file_size:
            head += fp.read(MAX_HEADER_BYTES - len(head))
            scanned = scan(head, file_size, wanted)
        if scanned is not None:
            meta = {tag: _ascii(raw) for tag, raw in scanned.meta.items()}
            syntax = _transfer_syntax(meta.get(0x00020010))
            encodings = _encodings(scanned.elements.get(_CHARSET, ("CS", b""))[1])
            elements = scanned.elements
            implicit = syntax == IMPLICIT_LE

            def values(tag: int) -> Any:
                found = elements.get(tag)
                if found is not None and found[0] == "SQ":
                    return _sequence(found[1], implicit, encodings)
                return None if found is None else _decode(found[0], found[1], encodings)

            header_bytes = _compressed(head[PREAMBLE_LENGTH : scanned.pixel_start])
            return _checked(
                fp,
                file_size,
                syntax,
                meta,
                values,
                scanned.pixel_start,
                header_bytes,
                citizen_ids,
            )
    return _read_with_pydicom(path, inflate_limit, citizen_ids)


def _read_with_pydicom(
    path: Path, inflate_limit: int | None, citizen_ids: CitizenIdSource = _CITIZEN_IDS
) -> InstanceHeader:
    try:
        file_meta = read_file_meta_info(path)
    except PARSE_ERRORS as exc:
        raise InvalidInstance(f"File Meta Information cannot be read: {_describe(exc)}") from None
    meta = {int(element.tag): str(element.value or "") for element in file_meta}
    syntax = _transfer_syntax(meta.get(0x00020010))
    if not syntax.is_deflated:
        return _parsed(path, syntax, meta, citizen_ids)
    if inflate_limit is None:
        raise InvalidInstance("the Deflated transfer syntax is not accepted by this archive")
    with inflated(path, file_meta, inflate_limit) as copy:
        header = _parsed(copy, UID(ExplicitVRLittleEndian), meta, citizen_ids)
    return InstanceHeader(  # offsets of the inflated copy mean nothing in the stored file
        str(syntax),
        header.sop_class_uid,
        header.sop_instance_uid,
        header.study_instance_uid,
        header.series_instance_uid,
        header.values,
        None,
        None,
        None,
    )


def _parsed(
    path: Path, syntax: UID, meta: Mapping[int, str], citizen_ids: CitizenIdSource
) -> InstanceHeader:
    with path.open("rb") as file:
        file_size = os.fstat(file.fileno()).st_size
        fp = _HeaderReads(file)
        try:
            dataset = dcmread(fp, stop_before_pixels=True, defer_size=DEFER_SIZE)
            pixel_start = fp.tell()
            if pixel_start > file_size:
                raise InvalidInstance(
                    f"the dataset runs past the end of the file ({file_size} bytes)"
                )
            if fp.cut_at is not None:
                raise InvalidInstance(f"the file ends inside an element header at {fp.cut_at}")
            _check_lengths(dataset, file_size)
        except PARSE_ERRORS as exc:
            raise InvalidInstance(f"dataset cannot be parsed: {_describe(exc)}") from None
        header_bytes = None
        if pixel_start - PREAMBLE_LENGTH <= MAX_HEADER_BYTES:
            file.seek(PREAMBLE_LENGTH)
            header_bytes = _compressed(file.read(pixel_start - PREAMBLE_LENGTH))
        values = _dataset_values(dataset)
        return _checked(
            file, file_size, syntax, meta, values, pixel_start, header_bytes, citizen_ids
        )


def _checked(
    fp: BinaryIO,
    file_size: int,
    syntax: UID,
    meta: Mapping[int, str],
    values: Values,
    pixel_start: int,
    header_bytes: bytes | None,
    citizen_ids: CitizenIdSource,
) -> InstanceHeader:
    """The checks and the extraction both readers share."""
    try:
        uids = _required_uids(values, meta)
        image = ImageModule(
            rows=_to_int(values(_IMAGE["Rows"])),
            columns=_to_int(values(_IMAGE["Columns"])),
            bits_allocated=_to_int(values(_IMAGE["BitsAllocated"])),
            samples_per_pixel=_to_int(values(_IMAGE["SamplesPerPixel"])),
            number_of_frames=_to_int(values(_IMAGE["NumberOfFrames"])),
            photometric_interpretation=_text(values(_IMAGE["PhotometricInterpretation"])),
        )
        offset, length = check_pixel_data(
            fp, pixel_start, file_size, image, syntax, defer_size=DEFER_SIZE
        )
        extracted = _extract(values)
        extracted[Level.PATIENT]["citizen_id"] = citizen_id(values, citizen_ids)
    except (InvalidInstance, InconsistentInstance):
        raise
    except PARSE_ERRORS as exc:
        raise InvalidInstance(f"dataset cannot be parsed: {_describe(exc)}") from None
    return InstanceHeader(
        transfer_syntax_uid=str(syntax),
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        values=extracted,
        header_bytes=header_bytes,
        pixel_data_offset=offset,
        pixel_data_length=length,
    )


def _transfer_syntax(value: str | None) -> UID:
    if not value:
        raise InvalidInstance("File Meta Information has no Transfer Syntax UID")
    uid = UID(value.strip("\0 "))
    if problem := uid_problem(uid):
        raise InvalidInstance(f"Transfer Syntax UID {uid[:70]!r} {problem}")
    if not uid.is_transfer_syntax:
        raise InvalidInstance(f"Transfer Syntax UID {uid} is not a known transfer syntax")
    return uid


def _required_uids(values: Values, meta: Mapping[int, str]) -> dict[str, str]:
    uids: dict[str, str] = {}
    for keyword, tag in _REQUIRED.items():
        uid = (_text(values(tag)) or "").strip("\0 ")
        if not uid:
            raise InconsistentInstance(f"the dataset has no {keyword}")
        if problem := uid_problem(uid):
            raise InconsistentInstance(f"{keyword} {uid[:70]!r} {problem}")
        uids[keyword] = uid
    for tag, keyword in _MEDIA_STORAGE.items():
        declared = meta.get(tag, "").strip("\0 ")
        if declared and declared != uids[keyword]:
            name = "MediaStorageSOPClassUID" if tag == 0x00020002 else "MediaStorageSOPInstanceUID"
            raise InconsistentInstance(
                f"{name} {declared} does not match the dataset's {keyword} {uids[keyword]}"
            )
    return uids


class _HeaderReads:
    """The file as pydicom reads it, noting a tag or length that the end of the file cuts
    short: pydicom takes that for the end of the dataset, and would keep the file."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.cut_at: int | None = None

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if size in (4, 8) and 0 < len(data) < size and self.cut_at is None:
            self.cut_at = self._file.tell() - len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()


_SEQUENCE_VRS = {"SQ", "UN"}


def _check_lengths(dataset: Dataset, file_size: int) -> None:
    """Each top-level value must be whole, and only sequences may have an undefined length:
    pydicom keeps a value the end of the file cuts short, and reads a text of undefined
    length up to any sequence delimiter, elements and all."""
    for tag in dataset.keys():  # noqa: SIM118 - iterating a Dataset yields elements
        raw: object = dataset.get_item(tag)  # raw unless something converted it
        if not isinstance(raw, RawDataElement):
            continue
        if raw.length == 0xFFFFFFFF:
            if raw.VR not in _SEQUENCE_VRS:
                raise InvalidInstance(
                    f"element {tag} ({raw.VR}) has an undefined length but is no sequence"
                )
            continue
        if raw.value is None:  # not read (longer than DEFER_SIZE): its bytes must exist
            if raw.value_tell + raw.length > file_size:
                raise InvalidInstance(
                    f"element {tag} declares {raw.length} bytes but only "
                    f"{file_size - raw.value_tell} remain"
                )
        elif len(raw.value) < raw.length:
            raise InvalidInstance(
                f"element {tag} declares {raw.length} bytes but the file ends after "
                f"{len(raw.value)}"
            )


def _dataset_values(dataset: Dataset) -> Values:
    def values(tag: int) -> Any:
        if tag not in dataset:
            return None
        try:
            return dataset[tag].value
        except PARSE_ERRORS:
            return None

    return values


# -- the fast reader's values, decoded as pydicom decodes them -----------------------------

_CHARSET_VRS = {"LO", "SH", "LT", "ST", "UT", "UC"}
_SINGLE_VALUED_VRS = {"LT", "ST", "UT"}


def _sequence(raw: bytes, implicit: bool, encodings: list[str]) -> Any:
    """A sequence's items, as pydicom reads them (the fast reader keeps only Other Patient
    IDs Sequence, rarely more than a few items); None if unreadable, as pydicom's would be."""
    try:
        return read_sequence(BytesIO(raw), implicit, True, len(raw), encodings)
    except PARSE_ERRORS:
        return None


def _ascii(raw: bytes) -> str:
    return raw.decode("ascii", "replace").strip("\0 ")


def _encodings(raw: bytes) -> list[str]:
    names = [name.strip() for name in _ascii(raw).split("\\")] if raw else []
    return convert_encodings(names if any(names) else ["ISO_IR 6"])


def _decode(vr: str, raw: bytes, encodings: list[str]) -> Any:
    if not raw:
        return None
    if vr == "US":
        count = len(raw) // 2
        numbers = struct.unpack(f"<{count}H", raw[: count * 2])
        return numbers[0] if count == 1 else list(numbers)
    if vr == "PN":
        names = [str(PersonName(part, encodings)) for part in raw.split(b"\\")]
        return names[0] if len(names) == 1 else names
    if vr in _CHARSET_VRS:
        text = decode_bytes(raw, encodings, set())
    else:
        text = raw.decode("ascii", "replace")
    text = text.strip("\0 ")
    if "\\" in text and vr not in _SINGLE_VALUED_VRS:
        return [part.strip("\0 ") for part in text.split("\\")]
    return text


# -- extraction into index columns ---------------------------------------------------------


def _extract(values: Values) -> dict[Level, dict[str, Any]]:
    extracted: dict[Level, dict[str, Any]] = {}
    for level, attributes in _EXTRACTED.items():
        row: dict[str, Any] = {}
        for attribute, tag in attributes:
            value = _normalise(attribute, values(tag))
            row[attribute.column] = value
            if attribute.kind is Kind.NAME:
                row[f"{attribute.column}_upper"] = upper_key(value) if value else None
                row[f"{attribute.column}_folded"] = folded_key(value) if value else None
        extracted[level] = row
    return extracted


def _normalise(attribute: Attribute, value: Any) -> Any:
    """Turn a value into what the index column holds (None when empty or invalid)."""
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        parts = [str(v).strip("\0 ") for v in value]
        if attribute.kind in (Kind.INT, Kind.DECIMAL, Kind.DATE, Kind.TIME):
            value = parts[0] if parts else None
        else:
            joined = "\\".join(p for p in parts if p)
            return joined[:MAX_INDEXED_TEXT] or None
    kind = attribute.kind
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


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, MultiValue | list | tuple):
        return str(value[0]) if value else None
    return str(value).strip("\0 ")


def _to_int(value: Any) -> int | None:
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if value else None
    if value is None:
        return None
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


def _compressed(header: bytes) -> bytes | None:
    return zlib.compress(header, 6) if len(header) <= MAX_HEADER_BYTES else None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


__all__ = ["InstanceHeader", "normalise_date", "normalise_time", "read_header"]
