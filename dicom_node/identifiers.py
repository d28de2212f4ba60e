"""C-FIND identifiers in, matches out (PS3.4 C.4.1.1.3), as pure functions over datasets."""

import codecs
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.charset import convert_encodings, python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

from storage import BY_KEYWORD, InvalidQuery, Level

PATIENT_ROOT_LEVELS = {Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE}
STUDY_ROOT_LEVELS = {Level.STUDY, Level.SERIES, Level.IMAGE}
_SKIPPED = {"QueryRetrieveLevel", "SpecificCharacterSet"}
_ANSWERED_HERE = {"RetrieveAETitle", "InstanceAvailability"}
UTF8 = "ISO_IR 192"


@dataclass(frozen=True, slots=True)
class FindRequest:
    level: Level
    keys: dict[str, str | None]
    """Keyword → value as sent (decoded with the identifier's character set)."""
    requested: list[tuple[BaseTag, str, str]]
    """(tag, keyword, VR) of every key in the identifier, in order, for the responses."""
    charset: list[str]
    """The identifier's Specific Character Set (empty: the default repertoire)."""

    @property
    def unindexed(self) -> list[str]:
        """Requested keywords the index has no column for (read from stored headers)."""
        return [
            kw
            for _, kw, _ in self.requested
            if kw and kw not in BY_KEYWORD and kw not in _ANSWERED_HERE
        ]


def parse_identifier(identifier: Dataset, *, patient_root: bool) -> FindRequest:
    """Read a C-FIND, C-MOVE or C-GET identifier.

    Raises:
        InvalidQuery: Query/Retrieve Level is missing or not valid for the model.
    """
    raw_level = str(identifier.get("QueryRetrieveLevel", "") or "").strip()
    try:
        level = Level(raw_level)
    except ValueError:
        raise InvalidQuery(f"Query/Retrieve Level {raw_level!r} is not valid") from None
    if level not in (PATIENT_ROOT_LEVELS if patient_root else STUDY_ROOT_LEVELS):
        raise InvalidQuery(f"the Study Root model has no {level.value} level")
    keys: dict[str, str | None] = {}
    requested: list[tuple[BaseTag, str, str]] = []
    for element in identifier:
        keyword = element.keyword or ""
        if keyword in _SKIPPED or element.tag.group == 0x0002:
            continue
        requested.append((element.tag, keyword, element.VR))
        if keyword and element.VR != "SQ":
            keys[keyword] = _text(element.value)
    charset = identifier.get("SpecificCharacterSet") or []
    charset = [charset] if isinstance(charset, str) else list(charset)
    return FindRequest(level, keys, requested, [str(c) for c in charset])


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
_BINARY = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i", "FL": "<f", "FD": "<d"}
_CHARSET_VRS = {"PN", "LO", "SH", "LT", "ST", "UT", "UC"}
_CHARSET_TAG = 0x00080005


class Identifier(Dataset):
    """A C-FIND response identifier that encodes itself, bypassing pydicom's writer.

    It is a ``Dataset`` for pynetdicom's sake; the ``encode`` that :mod:`dicom_node.receive`
    installs asks it for its bytes instead of writing it element by element, which cost
    most of the time of every match. Elements copied from stored headers are still written
    by pydicom.
    """

    def __init__(self, items: list[tuple[int, str, bytes | DataElement]], charset: str) -> None:
        super().__init__()
        self._items = sorted(items, key=lambda item: item[0])
        self._charset = charset

    def encoded(self, implicit: bool) -> bytes:
        """The identifier in Implicit (or Explicit) VR Little Endian."""
        out = bytearray()
        for tag, vr, payload in self._items:
            if isinstance(payload, DataElement):
                out += _pydicom_element(payload, implicit, self._charset)
                continue
            out += struct.pack("<HH", tag >> 16, tag & 0xFFFF)
            if implicit:
                out += struct.pack("<I", len(payload))
            elif vr in _LONG_VRS:
                out += vr.encode() + b"\0\0" + struct.pack("<I", len(payload))
            else:
                out += vr.encode() + struct.pack("<H", len(payload))
            out += payload
        return bytes(out)


def build_response(
    request: FindRequest,
    values: dict[str, Any],
    *,
    extras: Dataset | None,
    retrieve_aet: str,
) -> Identifier:
    """The pending-response identifier for one match, holding exactly the requested keys."""
    chosen: list[tuple[int, str, Any]] = [(0x00080052, "CS", request.level.value)]
    for tag, keyword, vr in request.requested:
        if keyword in values:
            chosen.append((int(tag), _vr_of(tag, vr), values[keyword]))
        elif keyword == "RetrieveAETitle":
            chosen.append((int(tag), "AE", retrieve_aet))
        elif keyword == "InstanceAvailability":
            chosen.append((int(tag), "CS", "ONLINE"))
        elif extras is not None and tag in extras:
            chosen.append((int(tag), extras[tag].VR, extras[tag]))
        else:
            chosen.append((int(tag), _vr_of(tag, vr), None))
    charset = response_charset(request.charset, _texts(chosen))
    codec = python_encoding.get(charset, "utf_8")
    items: list[tuple[int, str, bytes | DataElement]] = [
        (_CHARSET_TAG, "CS", _padded(charset.encode(), b" "))
    ]
    for number, vr, value in chosen:
        items.append(
            (
                number,
                vr,
                value if isinstance(value, DataElement) else _value_bytes(vr, value, codec),
            )
        )
    return Identifier(items, charset)


def _value_bytes(vr: str, value: Any, codec: str) -> bytes:
    """An element value as DICOM bytes (PS3.5 6.2), padded to an even length."""
    if value is None or value == "":
        return b""
    if vr in _BINARY:
        numbers = value if isinstance(value, list | tuple) else str(value).split("\\")
        cast_to = float if vr in ("FL", "FD") else int
        return b"".join(struct.pack(_BINARY[vr], cast_to(n)) for n in numbers)
    text = _dicom_text(value)
    data = text.encode(codec if vr in _CHARSET_VRS else "ascii", "replace")
    return _padded(data, b"\0" if vr == "UI" else b" ")


def _padded(data: bytes, pad: bytes) -> bytes:
    return data + pad if len(data) % 2 else data


def _dicom_text(value: Any) -> str:
    if isinstance(value, float):
        text = repr(value)
        return text if len(text) <= 16 else f"{value:.10g}"
    if isinstance(value, list | tuple | MultiValue):
        return "\\".join(_dicom_text(v) for v in value)
    return str(value)


def _pydicom_element(element: DataElement, implicit: bool, charset: str) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = implicit
    write_data_element(buffer, element, convert_encodings([charset]))
    return buffer.getvalue()


def _vr_of(tag: BaseTag, sent: str) -> str:
    if sent and sent not in ("UN", "OB or OW", "US or SS"):
        return sent
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def _texts(chosen: list[tuple[int, str, Any]]) -> Iterable[str]:
    for _, vr, value in chosen:
        if isinstance(value, DataElement):
            value = value.value
        elif vr not in _CHARSET_VRS:
            continue
        if isinstance(value, str | PersonName):
            yield str(value)
        elif isinstance(value, MultiValue | list):
            yield from (str(v) for v in value if isinstance(v, str | PersonName))


def response_charset(requested: list[str], texts: Iterable[str]) -> str:
    """The query's own single-byte character set if every value fits in it, else UTF-8."""
    if len(requested) == 1 and requested[0] != UTF8 and requested[0] in python_encoding:
        codec = python_encoding[requested[0]]
        try:
            codecs.lookup(codec)
            for text in texts:
                text.encode(codec)
            return requested[0]
        except (LookupError, UnicodeEncodeError):
            pass
    return UTF8
