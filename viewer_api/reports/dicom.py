"""A signed report as DICOM objects that go into the study beside its images:

- ``encapsulated_pdf``: the printed report as Encapsulated PDF Storage (PS3.3 A.45.1), what
  any viewer can show;
- ``report_sr``: the same words as an Enhanced SR (PS3.3 A.36.3), shaped like TID 2000
  (Basic Diagnostic Imaging Report), what a RIS or another PACS can read.

Both take a ``ReportDocument`` and a header of one instance of the study (no pixel data
needed) and give a ``Dataset`` (UTF-8, ``ISO_IR 192``, Explicit VR Little Endian) ready for
``dcmwrite``. Patient and study attributes come from the header, so the report files with
its study; dates and times are in the header's offset from UTC, else Vietnam's.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import (
    CodeContentItem,
    CodedConcept,
    ContainerContentItem,
    ContentSequence,
    EnhancedSR,
    ObserverContext,
    PersonObserverIdentifyingAttributes,
    RelationshipTypeValues,
    TextContentItem,
)
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DataElementSequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import (
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
)
from pydicom.valuerep import DA, DT, TM, VR, PersonName

from viewer_api.reports.document import ReportDocument

MANUFACTURER = "Dalat PACS"
CHARACTER_SET = "ISO_IR 192"
PDF_SERIES_NUMBER = 9001
"""Report series sort after the images; each version is instance number ``version``."""
SR_SERIES_NUMBER = 9002

DIAGNOSTIC_IMAGING_REPORT = Code("18748-4", "LN", "Diagnostic imaging study")
LOCAL_SCHEME = "99DALAT"
"""Our private coding scheme (PS3.16 8.2: designators beginning ``99`` are local)."""
AMENDMENT_REASON = Code("amendment-reason", LOCAL_SCHEME, "Reason for amendment")
LANGUAGES = {
    "vi": Code("vi", "RFC5646", "Vietnamese"),
    "en": Code("en", "RFC5646", "English"),
}

PATIENT_AND_STUDY = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDsSequence",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
    "StudyDescription",
)
"""Copied from the study's header; those of type 2 are written empty when it lacks them."""
_TYPE_2 = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyID",
    }
)
_VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")


def encapsulated_pdf(
    doc: ReportDocument, pdf: bytes, study: Dataset, *, series_uid: str, sop_uid: str
) -> Dataset:
    """The rendered PDF as an Encapsulated PDF Storage instance of the report's study.

    ``EncapsulatedDocument`` is padded with a NUL to an even length;
    ``EncapsulatedDocumentLength`` keeps the PDF's own length.

    Raises:
        ValueError: ``pdf`` is not a PDF, or ``study`` is another study than the report's.
    """
    if not pdf.startswith(b"%PDF-"):
        raise ValueError("The encapsulated document is not a PDF (no %PDF- header).")
    zone = _zone(study)
    signed = _signed_at(doc, zone)
    ds = Dataset()
    ds.SpecificCharacterSet = CHARACTER_SET
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = sop_uid
    ds.TimezoneOffsetFromUTC = signed.strftime("%z")
    _copy_patient_and_study(doc, study, ds)
    # Encapsulated Document Series
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = PDF_SERIES_NUMBER
    ds.SeriesDate = DA(signed.date())
    ds.SeriesTime = TM(signed.time())
    ds.SeriesDescription = _series_description(doc)
    # General Equipment, SC Equipment
    ds.Manufacturer = MANUFACTURER
    if doc.study.hospital:
        ds.InstitutionName = doc.study.hospital
    ds.ConversionType = "WSD"  # workstation
    # Encapsulated Document
    ds.InstanceNumber = doc.version
    ds.ContentDate = DA(signed.date())
    ds.ContentTime = TM(signed.time())
    ds.AcquisitionDateTime = DT(signed)
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = doc.title
    ds.ConceptNameCodeSequence = [_code_item(DIAGNOSTIC_IMAGING_REPORT)]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + b"\0" * (len(pdf) % 2)
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.file_meta = _file_meta(ds)
    return ds


def report_sr(
    doc: ReportDocument,
    study: Dataset,
    *,
    series_uid: str,
    sop_uid: str,
    previous_versions: Sequence[Dataset] = (),
) -> Dataset:
    """The report as an Enhanced SR: a root container (LOINC 18748-4) holding the language,
    the author, a Findings container (one TEXT per section, under a local code ``99DALAT``
    named by the section's key, then the free text as Finding), an Impressions container
    (the impression) and, for an amendment, its reason.

    Final and amended reports are COMPLETE and VERIFIED by ``author_display`` for the
    hospital; a preliminary one is PARTIAL and UNVERIFIED. ``previous_versions`` (headers of
    the earlier SR versions) become the Predecessor Documents Sequence.

    Raises:
        ValueError: ``study`` is another study than the report's.
    """
    zone = _zone(study)
    signed = _signed_at(doc, zone)
    # highdicom copies patient and study from the evidence by the modules of its SOP class,
    # and knows only standard classes: it is shown the header as Secondary Capture, and the
    # reference it records to the header gets the header's own class back below.
    evidence = Dataset()
    evidence.SOPClassUID = SecondaryCaptureImageStorage
    evidence.SOPInstanceUID = study.SOPInstanceUID
    evidence.SeriesInstanceUID = study.SeriesInstanceUID
    _copy_patient_and_study(doc, study, evidence)
    done = doc.status != "preliminary"
    organization = doc.study.hospital or MANUFACTURER
    sr = EnhancedSR(
        evidence=[evidence],
        content=_content(doc, organization),
        series_instance_uid=series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=doc.version,
        manufacturer=MANUFACTURER,
        is_complete=done,
        is_final=done,
        is_verified=done,
        institution_name=doc.study.hospital or None,
        verifying_observer_name=_person_name(doc.author_display) if done else None,
        verifying_organization=organization if done else None,
        previous_versions=list(previous_versions) or None,
        record_evidence=False,
        specific_character_set=CHARACTER_SET,
        series_description=_series_description(doc),
        content_date=DA(signed.date()),
        content_time=TM(signed.time()),
        coding_schemes=[
            CodingSchemeIdentificationItem(
                designator=LOCAL_SCHEME,
                name="Dalat PACS report sections",
                responsible_organization=MANUFACTURER,
            )
        ],
    )
    created = datetime.now(zone).replace(microsecond=0)
    sr.InstanceCreationDate = DA(created.date())
    sr.InstanceCreationTime = TM(created.time())
    sr.TimezoneOffsetFromUTC = signed.strftime("%z")
    if done:
        sr.VerifyingObserverSequence[0].VerificationDateTime = DT(signed)
    _copy_patient_and_study(doc, study, sr)
    for series in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence:
        for instance in series.ReferencedSOPSequence:
            instance.ReferencedSOPClassUID = study.SOPClassUID
    # highdicom records the header's equipment as contributing: it did not make the report.
    if "ContributingEquipmentSequence" in sr:
        del sr.ContributingEquipmentSequence
    return sr


def _content(doc: ReportDocument, organization: str) -> ContainerContentItem:
    root = ContainerContentItem(name=DIAGNOSTIC_IMAGING_REPORT)
    items: list[Any] = [
        CodeContentItem(
            name=codes.DCM.LanguageOfContentItemAndDescendants,
            value=LANGUAGES[doc.language],
            relationship_type=RelationshipTypeValues.HAS_CONCEPT_MOD,
        ),
        *ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=PersonObserverIdentifyingAttributes(
                name=_person_name(doc.author_display),
                login_name=doc.author,
                organization_name=organization,
            ),
        ),
    ]
    findings = [
        _text(_section_code(section.key, section.label), section.text)
        for section in doc.sections
        if section.text.strip()
    ]
    if doc.findings.strip():
        findings.append(_text(codes.DCM.Finding, doc.findings))
    if findings:
        items.append(_container(codes.DCM.Findings, findings))
    if doc.impression.strip():
        impression = _text(codes.DCM.Impression, doc.impression)
        items.append(_container(codes.DCM.Impressions, [impression]))
    if doc.reason and doc.reason.strip():
        items.append(_text(AMENDMENT_REASON, doc.reason))
    root.ContentSequence = ContentSequence(items)
    return root


def _container(name: Code, children: list[TextContentItem]) -> ContainerContentItem:
    container = ContainerContentItem(name=name, relationship_type=RelationshipTypeValues.CONTAINS)
    container.ContentSequence = ContentSequence(children)
    return container


def _text(name: Code | CodedConcept, value: str) -> TextContentItem:
    return TextContentItem(
        name=name, value=value, relationship_type=RelationshipTypeValues.CONTAINS
    )


def _section_code(key: str, label: str) -> CodedConcept:
    """A template's section as a local code; a Code Meaning is at most 64 characters (LO)."""
    return CodedConcept(value=key, scheme_designator=LOCAL_SCHEME, meaning=label[:64])


def _copy_patient_and_study(doc: ReportDocument, study: Dataset, target: Dataset) -> None:
    """Copy the patient and study attributes, decoded, so that they are written again in
    UTF-8 whatever character set the header came in."""
    if study.get("StudyInstanceUID") != doc.study.study_instance_uid:
        raise ValueError(
            f"The header is of study {study.get('StudyInstanceUID')}, "
            f"the report of study {doc.study.study_instance_uid}."
        )
    for keyword in PATIENT_AND_STUDY:
        if keyword in study and study[keyword].value is not None:
            target.add(_detached(study[keyword]))
        elif keyword in _TYPE_2:
            setattr(target, keyword, None)
        elif keyword in target:
            delattr(target, keyword)


def _detached(element: DataElement) -> DataElement:
    """A copy holding decoded values only: no raw bytes tied to the header's character set."""
    value: Any = element.value
    if element.VR == VR.SQ:
        value = DataElementSequence([_detached_item(item) for item in value])
    elif isinstance(value, PersonName):
        value = str(value)
    elif isinstance(value, MultiValue):
        value = [str(v) if isinstance(v, PersonName) else v for v in value]
    return DataElement(element.tag, element.VR, value)


def _detached_item(item: Dataset) -> Dataset:
    copy = Dataset()
    for element in item:
        copy.add(_detached(element))
    return copy


def _zone(study: Dataset) -> tzinfo:
    """The header's own offset from UTC if it has one (its dates and times are in it), else
    Vietnam's."""
    offset = str(study.get("TimezoneOffsetFromUTC", "") or "")
    if len(offset) == 5 and offset[0] in "+-" and offset[1:].isdigit():
        minutes = int(offset[1:3]) * 60 + int(offset[3:])
        return timezone(timedelta(minutes=-minutes if offset[0] == "-" else minutes))
    return _VIETNAM


def _signed_at(doc: ReportDocument, zone: tzinfo) -> datetime:
    if doc.signed_at.tzinfo is None or doc.signed_at.utcoffset() is None:
        raise ValueError(f"The signing time {doc.signed_at.isoformat()} has no time zone.")
    return doc.signed_at.astimezone(zone).replace(microsecond=0)


def _person_name(value: str) -> str:
    """A PN with at least one caret: a name without one is all family name (PS3.5 6.2)."""
    return value if "^" in value else f"{value}^"


def _series_description(doc: ReportDocument) -> str:
    return f"Report v{doc.version} ({doc.status})"


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta
