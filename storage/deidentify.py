"""De-identification by the Basic Application Level Confidentiality Profile (PS3.15 E.2).

A :class:`Deidentifier` holds what one export must keep consistent: the same patient gets
the same pseudonym, and the same UID the same new UID, in every instance of the export, so
that series, frames of reference and references inside sequences still point at each
other. Both are derived from a secret salt with HMAC-SHA256, so a later export with the
same salt gives the same pseudonyms and UIDs, and nobody without the salt can link them
back.

The actions of PS3.15 Table E.1-1 (D dummy, Z zero length, X remove, K keep, U new UID)
are one table, :data:`BASIC_PROFILE`, applied at every depth of the dataset. Where the
table offers a choice (X/Z, X/D, Z/D, X/Z/U*), the least that keeps the IODs valid is
chosen: Z or D for Type 1 and 2 attributes, K for reference sequences (their UIDs are
then replaced), X for the rest. Beyond the table, every private element, every person
name (PN) and the overlay and curve groups (60xx, 50xx) are removed.

Options: Retain Longitudinal Temporal Information with Modified Dates (PS3.15 E.3.6),
off by default: dates and times are then kept, dates shifted back by a per-patient number
of days. The Clean Descriptors option is not offered: descriptions are removed.

Pixel data is never decoded: :meth:`Deidentifier.write_file` copies its element's bytes
from the source file to the target as they are.
"""

import hashlib
import hmac
import uuid
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from typing import IO, BinaryIO, Final, Literal

from pydicom import dcmread, dcmwrite
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from storage.errors import CannotDeidentify

PROFILE_NAME: Final = "Basic Application Level Confidentiality Profile"  # PS3.15 E.2
_OPTION_NAME: Final = "Retain Longitudinal Temporal Info Modified Dates"  # E.3.6
PSEUDONYM_PREFIX: Final = "ANON-"
_MAX_SHIFT_DAYS: Final = 3650
_BURNED_IN_MODALITIES: Final = frozenset({"US", "SC", "OT"})
_SECONDARY_CAPTURE: Final = "1.2.840.10008.5.1.4.1.1.7"
"""Secondary Capture Image Storage and its multi-frame kinds (…1.7.1 to …1.7.4)."""
_CHUNK: Final = 1 << 20


class Action(StrEnum):
    """The actions of PS3.15 Table E.1-1."""

    DUMMY = "D"
    ZERO = "Z"
    REMOVE = "X"
    KEEP = "K"
    UID = "U"


_D, _Z, _X, _K, _U = Action.DUMMY, Action.ZERO, Action.REMOVE, Action.KEEP, Action.UID

BASIC_PROFILE: Final[dict[str, Action]] = {
    # Patient
    "PatientName": _D, "PatientID": _D, "IssuerOfPatientID": _X,
    "IssuerOfPatientIDQualifiersSequence": _X, "PatientBirthDate": _Z, "PatientBirthTime": _X,
    "PatientSex": _Z, "PatientAge": _X, "PatientSize": _X, "PatientWeight": _X,
    "PatientAddress": _X, "PatientTelephoneNumbers": _X, "PatientMotherBirthName": _X,
    "PatientBirthName": _X, "OtherPatientIDs": _X, "OtherPatientIDsSequence": _X,
    "OtherPatientNames": _X, "PatientReligiousPreference": _X, "EthnicGroup": _X,
    "Occupation": _X, "MilitaryRank": _X, "BranchOfService": _X, "CountryOfResidence": _X,
    "RegionOfResidence": _X, "MedicalRecordLocator": _X, "MedicalAlerts": _X,
    "Allergies": _X, "SmokingStatus": _X, "PregnancyStatus": _X, "LastMenstrualDate": _X,
    "AdditionalPatientHistory": _X, "PatientComments": _X, "PatientState": _X,
    "SpecialNeeds": _X, "PatientInsurancePlanCodeSequence": _X,
    "PatientPrimaryLanguageCodeSequence": _X, "ReferencedPatientSequence": _X,
    "ReferencedPatientPhotoSequence": _X, "ResponsiblePerson": _X,
    "ResponsibleOrganization": _X, "PatientTransportArrangements": _X,
    "CurrentPatientLocation": _X, "PatientInstitutionResidence": _X, "PersonName": _D,
    "PersonAddress": _X, "PersonTelephoneNumbers": _X,
    # Study, request and procedure step
    "StudyDate": _Z, "StudyTime": _Z, "AccessionNumber": _Z, "StudyID": _Z,
    "StudyDescription": _X, "ReferringPhysicianName": _Z, "ReferringPhysicianAddress": _X,
    "ReferringPhysicianTelephoneNumbers": _X, "ReferringPhysicianIdentificationSequence": _X,
    "ConsultingPhysicianName": _X, "ConsultingPhysicianIdentificationSequence": _X,
    "PhysiciansOfRecord": _X, "PhysiciansOfRecordIdentificationSequence": _X,
    "NameOfPhysiciansReadingStudy": _X, "PhysiciansReadingStudyIdentificationSequence": _X,
    "RequestingPhysician": _X, "RequestingService": _X, "ReferencedStudySequence": _X,
    "RequestAttributesSequence": _X, "AdmissionID": _X, "IssuerOfAdmissionIDSequence": _X,
    "AdmittingDiagnosesDescription": _X, "AdmittingDiagnosesCodeSequence": _X,
    "AdmittingDate": _X, "AdmittingTime": _X, "ReasonForStudy": _X,
    "RequestedProcedureDescription": _X, "RequestedProcedureID": _X,
    "RequestedContrastAgent": _X, "StudyComments": _X, "ReasonForTheRequestedProcedure": _X,
    "OrderEnteredBy": _X, "OrderEntererLocation": _X, "OrderCallbackPhoneNumber": _X,
    "PlacerOrderNumberImagingServiceRequest": _X,
    "FillerOrderNumberImagingServiceRequest": _X, "ImagingServiceRequestComments": _X,
    "IssuerOfAccessionNumberSequence": _X, "StudyIDIssuer": _X,
    "ScheduledProcedureStepDescription": _X, "ScheduledPerformingPhysicianName": _X,
    "ScheduledStationName": _X, "ScheduledStationAETitle": _X,
    "ScheduledProcedureStepLocation": _X, "PerformedProcedureStepID": _X,
    "PerformedProcedureStepDescription": _X, "PerformedProcedureStepStartDate": _X,
    "PerformedProcedureStepStartTime": _X, "PerformedProcedureStepEndDate": _X,
    "PerformedProcedureStepEndTime": _X, "PerformedLocation": _X, "PerformedStationName": _X,
    "PerformedStationAETitle": _X, "CommentsOnThePerformedProcedureStep": _X,
    "ReferencedPerformedProcedureStepSequence": _X, "ProcedureCodeSequence": _X,
    # Series, equipment, acquisition, image
    "SeriesDate": _X, "SeriesTime": _X, "AcquisitionDate": _X, "AcquisitionTime": _X,
    "AcquisitionDateTime": _X, "ContentDate": _Z, "ContentTime": _Z,
    "InstanceCreationDate": _X, "InstanceCreationTime": _X, "SeriesDescription": _X,
    "ProtocolName": _X, "PerformingPhysicianName": _X,
    "PerformingPhysicianIdentificationSequence": _X, "OperatorsName": _X,
    "OperatorIdentificationSequence": _X, "InstitutionName": _X, "InstitutionAddress": _X,
    "InstitutionalDepartmentName": _X, "InstitutionCodeSequence": _X,
    "InstitutionalDepartmentTypeCodeSequence": _X, "StationName": _X,
    "DeviceSerialNumber": _X, "DetectorID": _X, "GantryID": _X, "CassetteID": _X,
    "GeneratorID": _X, "DeviceDescription": _X, "ImageComments": _X, "FrameComments": _X,
    "DerivationDescription": _X, "AcquisitionComments": _X,
    "AcquisitionDeviceProcessingDescription": _X, "ContrastBolusAgent": _Z,
    "TextString": _X, "TextComments": _X, "SourceImageSequence": _K,
    "ReferencedImageSequence": _K,
    # Structured reports and presentation states
    "ContentSequence": _X, "ContentCreatorName": _Z,
    "ContentCreatorIdentificationCodeSequence": _X, "VerifyingObserverName": _D,
    "VerifyingObserverIdentificationCodeSequence": _Z, "VerifyingOrganization": _X,
    "VerificationDateTime": _D, "ObservationDateTime": _X, "GraphicAnnotationSequence": _X,
    # Security and provenance
    "DigitalSignaturesSequence": _X, "MACParametersSequence": _X,
    "EncryptedAttributesSequence": _X, "OriginalAttributesSequence": _X,
    "ModifiedAttributesSequence": _X, "DataSetTrailingPadding": _X,
    "SourceApplicationEntityTitle": _X, "PrivateInformation": _X,
    "PrivateInformationCreatorUID": _X,
    # UIDs
    "StudyInstanceUID": _U, "SeriesInstanceUID": _U, "SOPInstanceUID": _U,
    "MediaStorageSOPInstanceUID": _U, "FrameOfReferenceUID": _U,
    "ReferencedSOPInstanceUID": _U, "ReferencedSOPInstanceUIDInFile": _U,
    "RequestedSOPInstanceUID": _U, "ReferencedFrameOfReferenceUID": _U,
    "RelatedFrameOfReferenceUID": _U, "SourceFrameOfReferenceUID": _U,
    "SynchronizationFrameOfReferenceUID": _U, "ConcatenationUID": _U,
    "DimensionOrganizationUID": _U, "IrradiationEventUID": _U, "InstanceCreatorUID": _U,
    "UID": _U, "StorageMediaFileSetUID": _U, "TransactionUID": _U, "FiducialUID": _U,
    "DoseReferenceUID": _U, "DeviceUID": _U, "SpecimenUID": _U, "ObservationUID": _U,
    "PaletteColorLookupTableUID": _U, "TrackingUID": _U,
    "PresentationDisplayCollectionUID": _U, "PresentationSequenceCollectionUID": _U,
    "TemplateExtensionOrganizationUID": _U, "TemplateExtensionCreatorUID": _U,
    "ContextGroupExtensionCreatorUID": _U,
    # More of E.1-1 (and what can carry a face or a name: icons, free text, contacts)
    "PatientTelecomInformation": _X, "PersonTelecomInformation": _X,
    "PatientBirthDateInAlternativeCalendar": _X, "PatientDeathDateInAlternativeCalendar": _X,
    "PatientAlternativeCalendar": _X, "RequestedProcedureComments": _X,
    "DateOfSecondaryCapture": _X, "TimeOfSecondaryCapture": _X, "IconImageSequence": _X,
    "AcquisitionContextSequence": _X, "AuthorObserverSequence": _X, "VisitComments": _X,
    "ScheduledProcedureStepID": _X, "ServiceEpisodeID": _X, "ServiceEpisodeDescription": _X,
    "ReferencedPatientAliasSequence": _X, "InterpretationText": _X,
    "ImagePresentationComments": _X, "StorageMediaFileSetID": _X,
    "ClinicalTrialSponsorName": _X, "ClinicalTrialProtocolID": _X,
    "ClinicalTrialProtocolName": _X, "ClinicalTrialSiteID": _X, "ClinicalTrialSiteName": _X,
    "ClinicalTrialSubjectID": _X, "ClinicalTrialSubjectReadingID": _X,
    "ClinicalTrialTimePointID": _X, "ClinicalTrialTimePointDescription": _X,
    "ClinicalTrialCoordinatingCenterName": _X, "SendingApplicationEntityTitle": _X,
    "ReceivingApplicationEntityTitle": _X,
}  # fmt: skip
"""DICOM keyword → action, from PS3.15 Table E.1-1 (Basic Profile column)."""

_ACTIONS: Final[dict[int, Action]] = {
    int(tag_for_keyword(keyword) or 0): action for keyword, action in BASIC_PROFILE.items()
}
_DUMMIES: Final = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "PN": "ANONYMOUS"}
_DATES: Final = frozenset({"DA", "DT", "TM"})
_PIXEL_TAGS: Final = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
_SEQUENCE_DELIMITER: Final = 0xFFFEE0DD
_BIRTH: Final = frozenset({0x00100030, 0x00100032})
"""Patient's Birth Date and Time: removed even with the modified-dates option."""


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


@dataclass(slots=True)
class Deidentifier:
    """The pseudonyms and new UIDs of one export, derived from a secret salt.

    Args:
        salt: secret bytes; the same salt gives the same pseudonyms and UIDs.
        shift_dates: the Retain Longitudinal Temporal Information with Modified Dates
            option: keep dates and times, dates moved back by a per-patient offset.
        allow_burned_in: also export instances that may carry burned-in text.
    """

    salt: bytes
    shift_dates: bool = False
    allow_burned_in: bool = False
    _uids: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.salt) < 16:
            raise ValueError("the salt must be at least 16 bytes")

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self.salt, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()

    def new_uid(self, uid: str) -> str:
        """The UID that replaces `uid`: 2.25.<a name-based UUID as an integer> (PS3.5 B.2)."""
        found = self._uids.get(uid)
        if found is None:
            derived = uuid.UUID(bytes=self._digest("uid", uid)[:16], version=5)
            found = self._uids[uid] = f"2.25.{derived.int}"
        return found

    def pseudonym(self, patient_id: str, issuer: str = "") -> str:
        """The patient's pseudonym (ASCII, used as Patient ID and Patient's Name)."""
        return (
            PSEUDONYM_PREFIX + self._digest("patient", f"{issuer}\0{patient_id}").hex()[:12].upper()
        )

    def patient_pseudonym(self, dataset: Dataset) -> str:
        """The pseudonym the patient of `dataset` gets (its header is enough)."""
        return self.pseudonym(*_patient_key(dataset))

    def date_shift(self, patient_key: str) -> timedelta:
        """How far back the patient's dates move with the modified-dates option."""
        digest = self._digest("days", patient_key)
        return timedelta(days=1 + int.from_bytes(digest[:4], "big") % _MAX_SHIFT_DAYS)

    def refusal(self, dataset: Dataset) -> str | None:
        """Why the instance may not be exported de-identified, or None (PS3.15 E.3.1)."""
        if self.allow_burned_in:
            return None
        burned_in = str(dataset.get("BurnedInAnnotation", "")).strip().upper()
        if burned_in == "YES":
            return "Burned In Annotation is YES: the pixels carry identifying text"
        if burned_in == "NO":
            return None
        modality = str(dataset.get("Modality", "")).strip().upper()
        if modality in _BURNED_IN_MODALITIES:
            return (
                f"modality {modality} without Burned In Annotation NO: the pixels may carry "
                "names (give --allow-burned-in after checking them)"
            )
        sop_class = str(dataset.get("SOPClassUID", ""))
        image_type = [str(v).upper() for v in dataset.get("ImageType", [])]
        if sop_class.startswith(_SECONDARY_CAPTURE) or "SECONDARY" in image_type:
            return (
                "a secondary capture (a screenshot, a dose report) without Burned In "
                "Annotation NO: the pixels may carry names (give --allow-burned-in after "
                "checking them)"
            )
        return None

    def deidentify(self, dataset: Dataset) -> Dataset:
        """A de-identified copy of `dataset` (its file meta included).

        Raises:
            CannotDeidentify: the instance may carry identifying text in its pixels.
        """
        copied = deepcopy(dataset)
        self.deidentify_in_place(copied)
        return copied

    def deidentify_in_place(self, dataset: Dataset) -> None:
        """De-identify `dataset` itself; see :meth:`deidentify`."""
        reason = self.refusal(dataset)
        if reason is not None:
            raise CannotDeidentify(reason)
        patient_id, issuer = _patient_key(dataset)
        pseudonym = self.pseudonym(patient_id, issuer)
        shift = self.date_shift(f"{issuer}\0{patient_id}") if self.shift_dates else None
        self._clean(dataset, pseudonym, shift)
        meta = getattr(dataset, "file_meta", None)
        if isinstance(meta, FileMetaDataset):
            self._clean(meta, pseudonym, shift)
            if "SOPInstanceUID" in dataset:
                meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        self._mark(dataset, shifted=shift is not None)

    def _clean(self, dataset: Dataset, pseudonym: str, shift: timedelta | None) -> None:
        for element in list(dataset):
            tag = element.tag
            if tag.is_private or (tag.element == 0 and tag.group != 2) or _overlay_or_curve(tag):
                del dataset[tag]
                continue
            action = _ACTIONS.get(int(tag))
            if action is None:  # not in the table: names, and dates unless they are shifted
                dated = element.VR in _DATES and shift is None
                action = _X if element.VR == "PN" or dated else _K
            elif shift is not None and element.VR in _DATES and int(tag) not in _BIRTH:
                action = _K
            if action is _K:
                if element.VR == "SQ":
                    for item in element.value:
                        self._clean(item, pseudonym, shift)
                elif shift is not None and element.VR in ("DA", "DT"):
                    _shift(element, shift)
            elif action is _X:
                del dataset[tag]
            elif action is _Z:
                element.value = [] if element.VR == "SQ" else None
            elif action is _U:
                element.value = _mapped(element, self.new_uid)
            elif tag in (0x00100010, 0x00100020):  # Patient's Name, Patient ID
                element.value = pseudonym
            else:
                element.value = [] if element.VR == "SQ" else _DUMMIES.get(element.VR, "ANONYMOUS")

    @staticmethod
    def _mark(dataset: Dataset, *, shifted: bool) -> None:
        """Record what was done (PS3.15 E.1.1, PS3.3 C.7.1.1)."""
        dataset.PatientIdentityRemoved = "YES"
        dataset.DeidentificationMethod = [PROFILE_NAME, _OPTION_NAME] if shifted else PROFILE_NAME
        codes = [_code("113100", "Basic Application Confidentiality Profile")]
        if shifted:
            codes.append(
                _code("113107", "Retain Longitudinal Temporal Information Modified Dates Option")
            )
        dataset.DeidentificationMethodCodeSequence = codes
        dataset.LongitudinalTemporalInformationModified = "MODIFIED" if shifted else "REMOVED"

    def write_file(self, source: BinaryIO, target: IO[bytes]) -> Dataset:
        """Write the de-identified Part 10 file of `source` to `target`; return its header.

        The header is read, de-identified and written; the pixel data element is then
        copied from `source` byte for byte, never decoded. Elements after it (trailing
        padding, signatures) are dropped.

        Raises:
            CannotDeidentify: the instance is refused (see :meth:`refusal`).
        """
        header = dcmread(source, stop_before_pixels=True, force=True)
        syntax = UID(header.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian))
        if syntax == DeflatedExplicitVRLittleEndian:  # no byte offsets: read it all
            source.seek(0)
            whole = dcmread(source, force=True)
            self.deidentify_in_place(whole)
            dcmwrite(target, whole, enforce_file_format=True)
            return whole
        pixel_start = source.tell()
        self.deidentify_in_place(header)
        dcmwrite(target, header, enforce_file_format=True)
        _copy_pixel_element(source, target, pixel_start, syntax)
        return header


def _patient_key(dataset: Dataset) -> tuple[str, str]:
    """Patient ID and Issuer; without an ID, the name and birth date identify the patient."""
    patient_id = str(dataset.get("PatientID", "")).strip()
    issuer = str(dataset.get("IssuerOfPatientID", "")).strip()
    if not patient_id:
        patient_id = f"{dataset.get('PatientName', '')}\0{dataset.get('PatientBirthDate', '')}"
    return patient_id, issuer


def _overlay_or_curve(tag: int) -> bool:
    group = tag >> 16
    return group % 2 == 0 and (0x5000 <= group <= 0x501E or 0x6000 <= group <= 0x601E)


def _mapped(element: DataElement, new_uid: Callable[[str], str]) -> str | list[str] | None:
    values = element.value if element.VM > 1 else [element.value]
    mapped = [new_uid(str(value)) for value in values if value]
    if not mapped:
        return None
    return mapped if element.VM > 1 else mapped[0]


def _shift(element: DataElement, shift: timedelta) -> None:
    values = element.value if element.VM > 1 else [element.value]
    shifted = [_shift_value(str(value), shift) for value in values if value]
    kept = [value for value in shifted if value is not None]
    element.value = (kept if element.VM > 1 else kept[0]) if kept else None


def _shift_value(value: str, shift: timedelta) -> str | None:
    """A DA or DT value moved back by `shift`; None when it is not a readable date."""
    try:
        day = date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return None
    return (day - shift).strftime("%Y%m%d") + value[8:]


def _copy_pixel_element(source: BinaryIO, target: IO[bytes], start: int, syntax: UID) -> None:
    """Copy the pixel data element at `start` (tag to end of value) from source to target."""
    source.seek(start)
    head = source.read(8)
    if len(head) < 8:
        return  # no pixel data
    order: Literal["little", "big"] = "little" if syntax.is_little_endian else "big"
    tag = int.from_bytes(head[0:2], order) << 16 | int.from_bytes(head[2:4], order)
    if tag not in _PIXEL_TAGS:
        return
    if syntax.is_implicit_VR:
        length = int.from_bytes(head[4:8], order)
        value_start = start + 8
    else:
        length = int.from_bytes(source.read(4), order)
        value_start = start + 12
    if length == 0xFFFFFFFF:  # encapsulated: walk the items to the sequence delimiter
        position = value_start
        while True:
            source.seek(position)
            item = source.read(8)
            if len(item) < 8:
                raise CannotDeidentify("the encapsulated pixel data has no end")
            item_tag = int.from_bytes(item[0:2], order) << 16 | int.from_bytes(item[2:4], order)
            position += 8 + int.from_bytes(item[4:8], order)
            if item_tag == _SEQUENCE_DELIMITER:
                break
        end = position
    else:
        end = value_start + length
    source.seek(start)
    remaining = end - start
    while remaining > 0:
        chunk = source.read(min(_CHUNK, remaining))
        if not chunk:
            raise CannotDeidentify("the pixel data is shorter than its length says")
        target.write(chunk)
        remaining -= len(chunk)
