"""A signed report as a FHIR R4 DiagnosticReport (pure functions).

The resource stands alone: the patient, the imaging study and, when a DICOMweb address is
given, the endpoint that serves the images are contained resources, so a hospital
information system can store it without looking anything up. Only standard R4 elements are
used: no extensions, no profiles.

Person names arrive as DICOM PN (``Family^Given^Middle^Prefix^Suffix``) and are shown as
Vietnamese write them: prefix, family, middle, given, suffix (``Nguyễn^Nhung^Thị Hồng`` and
``Nguyễn^Thị Hồng Nhung`` both read ``Nguyễn Thị Hồng Nhung``).
"""

import base64
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from hashlib import sha1, sha256
from typing import Any
from urllib.parse import quote

from viewer_api.reports.document import ReportDocument, StudyFacts

VIETNAM_TIME = timezone(timedelta(hours=7), "ICT")
"""Where the modalities' clocks are: DICOM study dates and times are local and carry no
offset, and FHIR wants one on every time of day."""

LOINC = "http://loinc.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
REPORT_CODE = ("18748-4", "Diagnostic imaging study")
"""LOINC code of the report as a whole."""

_STATUSES = {"preliminary": "preliminary", "final": "final", "amended": "amended"}
"""Our report status → DiagnosticReport.status (R4 value set ``diagnostic-report-status``)."""
_GENDERS = {"M": "male", "F": "female", "O": "other"}
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_UID = re.compile(r"[0-9.]{1,64}")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_LABELS = {
    "vi": {"findings": "Mô tả", "impression": "Kết luận", "reason": "Lý do sửa đổi"},
    "en": {"findings": "Findings", "impression": "Impression", "reason": "Reason for amendment"},
}


@dataclass(frozen=True, slots=True)
class PersonName:
    """The alphabetic group of a DICOM PN value, by component (PS3.5 6.2.1.1)."""

    family: str = ""
    given: str = ""
    middle: str = ""
    prefix: str = ""
    suffix: str = ""

    @classmethod
    def from_pn(cls, value: str | None) -> "PersonName":
        """``"Nguyễn^Thị Hồng Nhung"`` → family ``Nguyễn``, given ``Thị Hồng Nhung``.
        Ideographic and phonetic groups (after ``=``) are left out."""
        alphabetic = (value or "").split("=")[0]
        parts = [" ".join(part.split()) for part in alphabetic.split("^")[:5]]
        return cls(*parts)

    @property
    def vietnamese(self) -> str:
        """The name as Vietnamese write it: ``BS. Nguyễn Thị Hồng Nhung``."""
        order = (self.prefix, self.family, self.middle, self.given, self.suffix)
        return " ".join(part for part in order if part)

    def __bool__(self) -> bool:
        return any((self.family, self.given, self.middle, self.prefix, self.suffix))


def diagnostic_report(
    doc: ReportDocument,
    *,
    pdf: bytes | None = None,
    dicomweb_url: str | None = None,
    report_uids: tuple[str, str] | None = None,
    study_timezone: tzinfo = VIETNAM_TIME,
) -> dict[str, Any]:
    """The report as a FHIR R4 DiagnosticReport, ready for ``json.dumps``.

    Args:
        doc: The signed state of the report.
        pdf: The printable report; when given it is the first ``presentedForm``.
        dicomweb_url: The DICOMweb service root that serves the study (WADO-RS); it becomes
            the contained ImagingStudy's Endpoint.
        report_uids: SOP Instance UIDs of the report's DICOM renderings, the Encapsulated
            PDF's and the SR's, added as identifiers of the report.
        study_timezone: The offset of the study's local date and time.

    Raises:
        ValueError: If the document would make an invalid resource (no study UID, a signing
            time without a timezone, an unknown status) or an argument is malformed.
    """
    _check(doc, dicomweb_url, report_uids)
    study = doc.study
    when = study_time_fhir(study, study_timezone)
    interpreter = {"display": PersonName.from_pn(doc.author_display).vietnamese or doc.author}
    contained: list[dict[str, Any]] = [_patient(study), _imaging_study(study, when, dicomweb_url)]
    if dicomweb_url is not None:
        contained.append(_endpoint(dicomweb_url))
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": report_id(doc),
        "language": doc.language,
        "contained": contained,
        "identifier": _report_identifiers(study, report_uids),
        "status": _STATUSES[doc.status],
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                        "code": "RAD",
                        "display": "Radiology",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": LOINC, "code": REPORT_CODE[0], "display": REPORT_CODE[1]}],
            "text": doc.title,
        },
        "subject": {"reference": "#patient"},
        "effectiveDateTime": when,
        "issued": _instant(doc.signed_at),
        "performer": [interpreter],
        "resultsInterpreter": [interpreter],
        "imagingStudy": [{"reference": "#study"}],
        "conclusion": doc.impression,
        "presentedForm": _presented_forms(doc, pdf),
    }
    pruned: dict[str, Any] = _pruned(resource)
    return pruned


def report_id(doc: ReportDocument) -> str:
    """A FHIR id for this version of the report: ``<StudyInstanceUID>-v<version>``, or a
    digest of the UID where that would not be a valid id (over 64 characters)."""
    plain = f"{doc.study.study_instance_uid}-v{doc.version}"
    if _FHIR_ID.fullmatch(plain):
        return plain
    digest = sha256(doc.study.study_instance_uid.encode()).hexdigest()[:40]
    return f"{digest}-v{doc.version}"


def report_text(doc: ReportDocument) -> str:
    """The report as plain text: the title, then each section, the findings, the impression
    and, for an amendment, its reason, each as ``label:`` and its text, blank lines between."""
    labels = _LABELS[doc.language]
    parts = [(section.label, section.text) for section in doc.sections]
    parts += [(labels["findings"], doc.findings), (labels["impression"], doc.impression)]
    if doc.status == "amended":
        parts.append((labels["reason"], doc.reason or ""))
    blocks = [doc.title, *(f"{label}:\n{text}" for label, text in parts if text.strip())]
    return "\n\n".join(blocks)


def issuer_system(issuer: str) -> str | None:
    """The Identifier.system of patient IDs from `issuer` (DICOM Issuer of Patient ID): the
    issuer itself if it is a URI, ``urn:oid:`` before an OID, else a URN of our own."""
    issuer = issuer.strip()
    if not issuer:
        return None
    if is_oid(issuer):
        return f"urn:oid:{issuer}"
    if re.match(r"(urn:|https?://)\S+$", issuer):
        return issuer
    return f"urn:dalat-pacs:issuer:{quote(issuer, safe='')}"


def is_oid(value: str) -> bool:
    """Whether `value` is an ISO object identifier (``1.2.840.10008``)."""
    return _OID.fullmatch(value) is not None


def study_moment(study: StudyFacts, zone: tzinfo = VIETNAM_TIME) -> date | datetime | None:
    """When the study was made: a datetime in `zone` when the study time is readable, the
    date alone when only that is, else None."""
    day = _da(study.study_date)
    if day is None:
        return None
    clock = _tm(study.study_time)
    return day if clock is None else datetime.combine(day, clock, tzinfo=zone)


def study_time_fhir(study: StudyFacts, zone: tzinfo = VIETNAM_TIME) -> str | None:
    """The study's date and time as a FHIR dateTime (a time of day always has an offset)."""
    moment = study_moment(study, zone)
    return None if moment is None else moment.isoformat()


def birth_date(value: str | None) -> date | None:
    """A DICOM DA value as a date; None when it is missing or not a real date."""
    return _da(value)


def _check(
    doc: ReportDocument, dicomweb_url: str | None, report_uids: tuple[str, str] | None
) -> None:
    if not doc.study.study_instance_uid.strip():
        raise ValueError("The report's study has no Study Instance UID.")
    if doc.signed_at.utcoffset() is None:
        raise ValueError("The signing time must be timezone-aware (FHIR instant).")
    if doc.status not in _STATUSES:
        raise ValueError(f"Report status {doc.status!r} has no DiagnosticReport status.")
    if dicomweb_url is not None and not re.match(r"https?://\S+$", dicomweb_url):
        raise ValueError(f"The DICOMweb address {dicomweb_url!r} is not an http(s) URL.")
    for uid in report_uids or ():
        if not _UID.fullmatch(uid):
            raise ValueError(f"{uid!r} is not a DICOM UID.")


def _patient(study: StudyFacts) -> dict[str, Any]:
    name = PersonName.from_pn(study.patient_name)
    born = _da(study.birth_date)
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "patient",
        "identifier": [{"system": issuer_system(study.issuer), "value": study.patient_id}],
        "name": [_human_name(name)] if name else None,
        "gender": _gender(study.sex),
        "birthDate": None if born is None else born.isoformat(),
        "managingOrganization": {"display": study.hospital} if study.hospital else None,
    }
    return patient


def _human_name(name: PersonName) -> dict[str, Any]:
    """Given names in the order they are said: middle names first, as in Vietnamese."""
    return {
        "use": "official",
        "text": name.vietnamese,
        "family": name.family,
        "given": [part for part in (name.middle, name.given) if part],
        "prefix": [name.prefix] if name.prefix else None,
        "suffix": [name.suffix] if name.suffix else None,
    }


def _gender(sex: str | None) -> str | None:
    if not sex or not sex.strip():
        return None
    return _GENDERS.get(sex.strip().upper(), "unknown")


def _imaging_study(study: StudyFacts, when: str | None, dicomweb_url: str | None) -> dict[str, Any]:
    referrer = PersonName.from_pn(study.referring_physician).vietnamese
    return {
        "resourceType": "ImagingStudy",
        "id": "study",
        "identifier": [
            {"system": "urn:dicom:uid", "value": f"urn:oid:{study.study_instance_uid}"},
            *_accession(study),
        ],
        "status": "available",
        "modality": [{"system": DCM, "code": code} for code in study.modalities if code] or None,
        "subject": {"reference": "#patient"},
        "started": when,
        "referrer": {"display": referrer} if referrer else None,
        "endpoint": None if dicomweb_url is None else [{"reference": "#dicomweb"}],
        "description": study.study_description or None,
    }


def _endpoint(dicomweb_url: str) -> dict[str, Any]:
    return {
        "resourceType": "Endpoint",
        "id": "dicomweb",
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "dicom-wado-rs",
            "display": "DICOM WADO-RS",
        },
        "payloadType": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type",
                        "code": "any",
                        "display": "Any",
                    }
                ],
                "text": "DICOM",
            }
        ],
        "payloadMimeType": ["application/dicom", "application/dicom+json"],
        "address": dicomweb_url,
    }


def _accession(study: StudyFacts) -> list[dict[str, Any]]:
    if not study.accession_number:
        return []
    kind = {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
        "code": "ACSN",
        "display": "Accession ID",
    }
    return [{"type": {"coding": [kind]}, "value": study.accession_number}]


def _report_identifiers(
    study: StudyFacts, report_uids: tuple[str, str] | None
) -> list[dict[str, Any]]:
    identifiers = _accession(study)
    if report_uids is not None:
        kinds = ("Encapsulated PDF SOP Instance UID", "Structured Report SOP Instance UID")
        identifiers += [
            {"type": {"text": kind}, "system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}
            for kind, uid in zip(kinds, report_uids, strict=True)
        ]
    return identifiers


def _presented_forms(doc: ReportDocument, pdf: bytes | None) -> list[dict[str, Any]]:
    forms = [] if pdf is None else [_attachment(doc, "application/pdf", pdf)]
    text = report_text(doc).encode()
    return [*forms, _attachment(doc, "text/plain; charset=utf-8", text)]


def _attachment(doc: ReportDocument, content_type: str, data: bytes) -> dict[str, Any]:
    """An Attachment with its content inline; ``hash`` is SHA-1, as R4 defines it."""
    return {
        "contentType": content_type,
        "language": doc.language,
        "data": base64.b64encode(data).decode("ascii"),
        "size": len(data),
        "hash": base64.b64encode(sha1(data, usedforsecurity=False).digest()).decode("ascii"),
        "title": doc.title,
        "creation": _instant(doc.signed_at),
    }


def _instant(moment: datetime) -> str:
    """A FHIR instant: seconds always, an offset in whole minutes (else UTC)."""
    offset = moment.utcoffset()
    if offset is not None and offset % timedelta(minutes=1):
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")


def _da(value: str | None) -> date | None:
    """DICOM DA (``YYYYMMDD``; the old ``YYYY.MM.DD`` too)."""
    text = (value or "").strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None


def _tm(value: str | None) -> time | None:
    """DICOM TM (``HH``, ``HHMM``, ``HHMMSS``, a fraction after ``.``; the old ``HH:MM:SS``)
    to the second."""
    text = (value or "").strip().replace(":", "").split(".")[0]
    if len(text) not in (2, 4, 6) or not text.isdigit():
        return None
    hour, minute, second = (int(text[i : i + 2] or 0) for i in (0, 2, 4))
    if hour > 23 or minute > 59 or second > 60:
        return None
    return time(hour, minute, min(second, 59))


def _pruned(value: Any) -> Any:
    """Without empty elements: FHIR allows no null, empty string, list or object."""
    if isinstance(value, dict):
        pruned = {key: _pruned(item) for key, item in value.items()}
        return {key: item for key, item in pruned.items() if item not in (None, "", [], {})}
    if isinstance(value, list):
        items = [_pruned(item) for item in value]
        return [item for item in items if item not in (None, "", [], {})]
    return value
