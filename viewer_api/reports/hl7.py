"""A signed report as an HL7 v2.5.1 ORU^R01 message (pure functions).

The message is MSH, PID, ORC, OBR, an NTE per line of an amendment's reason, then one TX
OBX per line of each section, of the findings and of the impression, and an ST OBX with
the Study Instance UID. Lines of one part share an OBX-4 sub-ID, so a receiver puts the
text back together by joining them with line breaks. Segments end with a carriage return
(HL7 v2.5.1 2.5.3); free text is escaped (2.7.4) and Vietnamese stays UTF-8 (MSH-18).
"""

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, tzinfo

from viewer_api.reports.document import ReportDocument, StudyFacts
from viewer_api.reports.fhir import (
    REPORT_CODE,
    VIETNAM_TIME,
    PersonName,
    birth_date,
    is_oid,
    study_moment,
)

SENDING_APPLICATION = "DALAT-PACS"
ENCODING_CHARACTERS = "^~\\&"
LOCAL_CODES = "99DALAT"
"""Coding system of the templates' section keys (a local ``99zzz`` name, HL7 table 0396)."""

FINDINGS = ("59776-5", "Procedure findings Narrative", "LN")
IMPRESSION = ("19005-8", "Radiology Imaging study [Impression] (narrative)", "LN")
STUDY_INSTANCE_UID = ("110180", "Study Instance UID", "DCM")

RESULT_STATUS = {"preliminary": "P", "final": "F", "amended": "C"}
"""Our report status → OBR-25 and OBX-11 (HL7 tables 0123 and 0085)."""
_SEX = {"M": "M", "F": "F", "O": "O"}
_LANGUAGES = {"vi": "vi^Vietnamese^ISO639", "en": "en^English^ISO639"}
_ESCAPES = {"|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\", "\\": "\\E\\"}


def oru_r01(
    doc: ReportDocument,
    *,
    sending_facility: str = "DALAT-PACS",
    receiving_application: str = "",
    receiving_facility: str = "",
    control_id: str | None = None,
    now: datetime | None = None,
    study_timezone: tzinfo = VIETNAM_TIME,
) -> str:
    """The report as an ORU^R01 message, segments separated by ``\\r``.

    Args:
        doc: The signed state of the report.
        sending_facility: MSH-4.
        receiving_application: MSH-5.
        receiving_facility: MSH-6.
        control_id: MSH-10; a random one when not given.
        now: MSH-7, the message's time; the present when not given.
        study_timezone: The offset of the study's local date and time (OBR-7, OBX-14).

    Raises:
        ValueError: If the report has no study UID, its signing time no timezone, or its
            status no HL7 result status.
    """
    if not doc.study.study_instance_uid.strip():
        raise ValueError("The report's study has no Study Instance UID.")
    if doc.signed_at.utcoffset() is None:
        raise ValueError("The signing time must be timezone-aware.")
    if doc.status not in RESULT_STATUS:
        raise ValueError(f"Report status {doc.status!r} has no HL7 result status.")
    study = doc.study
    status = RESULT_STATUS[doc.status]
    observed = timestamp(study_moment(study, study_timezone))
    filler = escape(study.accession_number or study.study_instance_uid)
    author = PersonName.from_pn(doc.author_display)
    msh = {
        2: ENCODING_CHARACTERS,
        3: SENDING_APPLICATION,
        4: escape(sending_facility),
        5: escape(receiving_application),
        6: escape(receiving_facility),
        7: timestamp(now or datetime.now(UTC)),
        9: "ORU^R01^ORU_R01",
        10: escape(control_id if control_id is not None else uuid.uuid4().hex[:20]),
        11: "P",
        12: "2.5.1",
        17: "VNM",
        18: "UNICODE UTF-8",
        19: _LANGUAGES[doc.language],
    }
    obr = {
        1: "1",
        3: filler,
        4: _code(*REPORT_CODE, "LN") + "^" + _code(doc.template, doc.title, LOCAL_CODES),
        7: observed,
        16: _components("", PersonName.from_pn(study.referring_physician)),
        22: timestamp(doc.signed_at),
        24: "RAD",
        25: status,
        32: _components(doc.author, author, separator="&"),
    }
    segments = [
        segment("MSH", msh),
        segment("PID", _pid(study)),
        segment("ORC", {1: "RE", 3: filler}),
        segment("OBR", obr),
    ]
    if doc.status == "amended" and doc.reason:
        segments += [
            segment("NTE", {1: str(n), 2: "L", 3: escape(line)})
            for n, line in enumerate(_lines(doc.reason), start=1)
        ]
    common = {11: status, 14: observed, 16: _components(doc.author, author)}
    observations = list(_text_observations(doc))
    observations.append(("ST", _code(*STUDY_INSTANCE_UID), "", study.study_instance_uid))
    segments += [
        segment("OBX", {1: str(n), 2: kind, 3: code, 4: sub_id, 5: escape(value), **common})
        for n, (kind, code, sub_id, value) in enumerate(observations, start=1)
    ]
    return "\r".join(segments) + "\r"


def escape(text: str) -> str:
    """`text` with the delimiters escaped (HL7 v2.5.1 2.7.4) and control characters as
    ``\\Xhh\\`` (2.7.5), so that no carriage return or MLLP framing byte is left in it."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif (char < " " and char != "\t") or char == "\x7f":
            out.append(f"\\X{ord(char):02X}\\")
        else:
            out.append(char)
    return "".join(out)


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment from its fields by number as the standard counts them (MSH-1 is the field
    separator itself, so MSH's first written field is MSH-2); trailing empty fields are
    left out. The values must already be escaped."""
    first = 2 if name == "MSH" else 1
    last = max((number for number, value in fields.items() if value), default=first - 1)
    return "|".join([name, *(fields.get(number, "") for number in range(first, last + 1))])


def timestamp(moment: date | datetime | None) -> str:
    """An HL7 DTM: ``YYYYMMDD`` for a date, ``YYYYMMDDHHMMSS+ZZZZ`` for a time."""
    if moment is None:
        return ""
    if isinstance(moment, datetime):
        return moment.strftime("%Y%m%d%H%M%S%z")
    return moment.strftime("%Y%m%d")


def _pid(study: StudyFacts) -> dict[int, str]:
    issuer = study.issuer.strip()
    authority = f"&{issuer}&ISO" if is_oid(issuer) else escape(issuer)
    patient_id = escape(study.patient_id) + (f"^^^{authority}" if authority else "")
    born = birth_date(study.birth_date)
    sex = (study.sex or "").strip().upper()
    return {
        1: "1",
        3: patient_id,
        5: _components(None, PersonName.from_pn(study.patient_name)),
        7: timestamp(born),
        8: _SEX.get(sex, "U") if sex else "",
    }


def _components(identifier: str | None, name: PersonName, separator: str = "^") -> str:
    """A name as XPN (without `identifier`), or as XCN or CNN after it: family, given,
    middle, suffix, prefix (HL7's order; DICOM puts the prefix before the suffix)."""
    parts = [name.family, name.given, name.middle, name.suffix, name.prefix]
    if identifier is not None:
        if not name and not identifier:
            return ""
        parts.insert(0, identifier)
    return separator.join(escape(part) for part in parts).rstrip(separator)


def _code(identifier: str, text: str, system: str) -> str:
    return f"{escape(identifier)}^{escape(text)}^{system}"


def _text_observations(doc: ReportDocument) -> Iterator[tuple[str, str, str, str]]:
    """(value type, OBX-3, OBX-4, value): one per line of each non-empty part."""
    parts = [(_code(s.key, s.label, LOCAL_CODES), s.text) for s in doc.sections]
    parts += [(_code(*FINDINGS), doc.findings), (_code(*IMPRESSION), doc.impression)]
    sub_id = 0
    for code, text in parts:
        if not text.strip():
            continue
        sub_id += 1
        for line in _lines(text):
            yield "TX", code, str(sub_id), line


def _lines(text: str) -> list[str]:
    """Lines of `text`, whatever its line breaks (CR LF, CR or LF)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
