"""A signed state of a report, as every rendering sees it: the study it is about, who
signed it and when, the template's sections and the impression. Its canonical form (JSON,
sorted keys, UTF-8, no spaces) is exactly what the radiologist's CMS signature covers."""

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from hashlib import sha256
from typing import Any, Literal

Status = Literal["preliminary", "final", "amended"]
Language = Literal["vi", "en"]


@dataclass(frozen=True, slots=True)
class StudyFacts:
    """What the report is about, from the index."""

    study_instance_uid: str
    patient_id: str
    patient_name: str | None = None
    """DICOM PN, e.g. ``Nguyễn^Văn An``."""
    issuer: str = ""
    birth_date: str | None = None
    """YYYYMMDD."""
    sex: str | None = None
    accession_number: str | None = None
    study_date: str | None = None
    """YYYYMMDD."""
    study_time: str | None = None
    study_description: str | None = None
    modalities: tuple[str, ...] = ()
    hospital: str | None = None
    referring_physician: str | None = None


@dataclass(frozen=True, slots=True)
class Section:
    """One structured part of the findings, as the template names it."""

    key: str
    """The template's key (``lungs``)."""
    label: str
    """As written in the report's language (``Phổi``)."""
    text: str


@dataclass(frozen=True, slots=True)
class ReportDocument:
    study: StudyFacts
    version: int
    """1 for the first signed state; each later signing adds one."""
    status: Status
    template: str
    """The template's key (``chest-xray``)."""
    title: str
    """In the report's language (``X-quang ngực thẳng``)."""
    language: Language
    sections: tuple[Section, ...]
    findings: str
    """Free text beside the structured sections."""
    impression: str
    author: str
    """The signing user's name in the archive."""
    author_display: str
    """The radiologist as a person (DICOM PN, from the certificate or the user)."""
    signed_at: datetime
    """Timezone-aware."""
    signer: str | None = None
    """The signing certificate's subject (RFC 4514); none for a preliminary report."""
    reason: str | None = None
    """Why an amendment was made."""

    def canonical(self) -> bytes:
        """The bytes the signature covers."""
        return canonical_json(asdict(self))

    @classmethod
    def from_canonical(cls, content: bytes) -> "ReportDocument":
        data = json.loads(content)
        return cls(
            study=StudyFacts(**{**data["study"], "modalities": tuple(data["study"]["modalities"])}),
            version=data["version"],
            status=data["status"],
            template=data["template"],
            title=data["title"],
            language=data["language"],
            sections=tuple(Section(**s) for s in data["sections"]),
            findings=data["findings"],
            impression=data["impression"],
            author=data["author"],
            author_display=data["author_display"],
            signed_at=datetime.fromisoformat(data["signed_at"]),
            signer=data["signer"],
            reason=data["reason"],
        )

    @property
    def content_sha256(self) -> str:
        return sha256(self.canonical()).hexdigest()


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8 (not ASCII escapes); datetimes in ISO
    8601. Without floats, this is the JSON Canonicalization Scheme (RFC 8785)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_iso
    ).encode()


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not part of a report")
