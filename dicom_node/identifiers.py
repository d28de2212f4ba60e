"""C-FIND identifiers in, matches out (PS3.4 C.4.1.1.3), as pure functions over datasets."""

import codecs
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom import config
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
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


def build_response(
    request: FindRequest,
    values: dict[str, Any],
    *,
    extras: Dataset | None,
    retrieve_aet: str,
) -> Dataset:
    """The pending-response identifier for one match, holding exactly the requested keys."""
    ds = Dataset()
    ds.QueryRetrieveLevel = request.level.value
    for tag, keyword, vr in request.requested:
        if keyword in values:
            ds[tag] = _element(tag, _vr_of(tag, vr), _dicom_value(values[keyword]))
        elif keyword == "RetrieveAETitle":
            ds[tag] = _element(tag, "AE", retrieve_aet)
        elif keyword == "InstanceAvailability":
            ds[tag] = _element(tag, "CS", "ONLINE")
        elif extras is not None and tag in extras:
            ds[tag] = extras[tag]
        else:
            ds[tag] = _element(tag, _vr_of(tag, vr), None)
    ds.SpecificCharacterSet = response_charset(request.charset, _texts(ds))
    return ds


def _element(tag: BaseTag, vr: str, value: Any) -> DataElement:
    """An element holding a stored value as it was received, valid or not."""
    return DataElement(tag, vr, value, validation_mode=config.IGNORE)


def _vr_of(tag: BaseTag, sent: str) -> str:
    if sent and sent not in ("UN", "OB or OW", "US or SS"):
        return sent
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def _dicom_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float):
        text = repr(value)
        return text if len(text) <= 16 else f"{value:.10g}"
    if isinstance(value, str) and "\\" in value:
        return value.split("\\")
    return value


def _texts(ds: Dataset) -> Iterable[str]:
    for element in ds:
        value = element.value
        if isinstance(value, str | PersonName):
            yield str(value)
        elif isinstance(value, MultiValue | list):
            yield from (str(v) for v in value if isinstance(v, str | PersonName))


def response_charset(requested: list[str], texts: Iterable[str]) -> str:
    """The query's own single-byte character set if every value fits in it, else UTF-8."""
    texts = list(texts)
    if len(requested) == 1 and requested[0] in python_encoding:
        codec = python_encoding[requested[0]]
        try:
            codecs.lookup(codec)
            for text in texts:
                text.encode(codec)
            return requested[0]
        except (LookupError, UnicodeEncodeError):
            pass
    return UTF8
