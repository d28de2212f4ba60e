"""The attributes the index keeps, matches and returns, one row per attribute (pure data).

One table drives three things: what ingest extracts from a header, which index column holds
it, and how a C-FIND or QIDO-RS key on it is matched (PS3.4 C.2.2.2). Attributes whose value
the archive computes (``ModalitiesInStudy``, ``NumberOfStudyRelatedInstances``, ...) are
here too, marked ``computed``.
"""

from dataclasses import dataclass
from enum import StrEnum


class Level(StrEnum):
    """Query/Retrieve levels, named as in (0008,0052) Query/Retrieve Level."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        return _DEPTH[self]


_DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.IMAGE: 3}


class Kind(StrEnum):
    """How values of an attribute are normalised and matched."""

    TEXT = "text"  # LO, SH, CS, AS, AE: case-sensitive, wildcards allowed
    NAME = "name"  # PN: case-insensitive, optionally diacritic-insensitive
    UID = "uid"  # UI: single value or list of UIDs
    DATE = "date"  # DA: single value or range
    TIME = "time"  # TM: single value or range
    INT = "int"  # IS, US: single value
    DECIMAL = "decimal"  # DS: single value
    MODALITIES = "modalities"  # ModalitiesInStudy: matches any series of the study


@dataclass(frozen=True, slots=True)
class Attribute:
    keyword: str
    level: Level
    column: str
    kind: Kind
    computed: bool = False
    multi: bool = False  # multi-valued; stored joined with a backslash


def _a(
    keyword: str,
    level: Level,
    column: str,
    kind: Kind,
    *,
    computed: bool = False,
    multi: bool = False,
) -> Attribute:
    return Attribute(keyword, level, column, kind, computed, multi)


P, ST, SE, IM = Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE
# Short names for the table below, after the VRs they stand for.
TXT, PN, UI, DA, TM, IS, DS = (
    Kind.TEXT,
    Kind.NAME,
    Kind.UID,
    Kind.DATE,
    Kind.TIME,
    Kind.INT,
    Kind.DECIMAL,
)

ATTRIBUTES: tuple[Attribute, ...] = (
    # Patient
    _a("PatientID", P, "patient_id", TXT),
    _a("IssuerOfPatientID", P, "issuer", TXT),
    _a("PatientName", P, "patient_name", PN),
    _a("PatientBirthDate", P, "birth_date", DA),
    _a("PatientSex", P, "sex", TXT),
    _a("OtherPatientIDs", P, "other_patient_ids", TXT, multi=True),
    _a("NumberOfPatientRelatedStudies", P, "num_studies", IS, computed=True),
    _a("NumberOfPatientRelatedSeries", P, "num_series", IS, computed=True),
    _a("NumberOfPatientRelatedInstances", P, "num_instances", IS, computed=True),
    # Study
    _a("StudyInstanceUID", ST, "study_instance_uid", UI),
    _a("StudyDate", ST, "study_date", DA),
    _a("StudyTime", ST, "study_time", TM),
    _a("AccessionNumber", ST, "accession_number", TXT),
    _a("StudyID", ST, "study_id", TXT),
    _a("StudyDescription", ST, "study_description", TXT),
    _a("ReferringPhysicianName", ST, "referring_physician_name", PN),
    _a("PatientAge", ST, "patient_age", TXT),
    _a("PatientSize", ST, "patient_size", DS),
    _a("PatientWeight", ST, "patient_weight", DS),
    _a("ModalitiesInStudy", ST, "modalities_in_study", Kind.MODALITIES, computed=True),
    _a("SOPClassesInStudy", ST, "sop_classes_in_study", UI, computed=True, multi=True),
    _a("NumberOfStudyRelatedSeries", ST, "num_series", IS, computed=True),
    _a("NumberOfStudyRelatedInstances", ST, "num_instances", IS, computed=True),
    # Series
    _a("SeriesInstanceUID", SE, "series_instance_uid", UI),
    _a("Modality", SE, "modality", TXT),
    _a("SeriesNumber", SE, "series_number", IS),
    _a("SeriesDescription", SE, "series_description", TXT),
    _a("BodyPartExamined", SE, "body_part_examined", TXT),
    _a("SeriesDate", SE, "series_date", DA),
    _a("SeriesTime", SE, "series_time", TM),
    _a("Laterality", SE, "laterality", TXT),
    _a("ViewPosition", SE, "view_position", TXT),
    _a("ProtocolName", SE, "protocol_name", TXT),
    _a("StationName", SE, "station_name", TXT),
    _a("InstitutionName", SE, "institution_name", TXT),
    _a("Manufacturer", SE, "manufacturer", TXT),
    _a("ManufacturerModelName", SE, "manufacturer_model_name", TXT),
    _a("PerformedProcedureStepStartDate", SE, "pps_start_date", DA),
    _a("PerformedProcedureStepStartTime", SE, "pps_start_time", TM),
    _a("NumberOfSeriesRelatedInstances", SE, "num_instances", IS, computed=True),
    # Instance
    _a("SOPInstanceUID", IM, "sop_instance_uid", UI),
    _a("SOPClassUID", IM, "sop_class_uid", UI),
    _a("InstanceNumber", IM, "instance_number", IS),
    _a("ContentDate", IM, "content_date", DA),
    _a("ContentTime", IM, "content_time", TM),
    _a("Rows", IM, "rows", IS),
    _a("Columns", IM, "columns", IS),
    _a("NumberOfFrames", IM, "number_of_frames", IS),
    _a("ImageType", IM, "image_type", TXT, multi=True),
    _a("SliceThickness", IM, "slice_thickness", DS),
    _a("AvailableTransferSyntaxUID", IM, "transfer_syntax_uid", UI, computed=True),
)

BY_KEYWORD: dict[str, Attribute] = {a.keyword: a for a in ATTRIBUTES}
"""Attributes by DICOM keyword. A keyword belongs to exactly one level."""

UNIQUE_KEYS: dict[Level, str] = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}
"""The unique key of each level (PS3.4 C.6)."""


def stored_at(level: Level) -> tuple[Attribute, ...]:
    """The attributes ingest extracts for `level` (not the computed ones)."""
    return tuple(a for a in ATTRIBUTES if a.level is level and not a.computed)
