"""The attributes the index keeps, matches and returns, one row per attribute (pure data).

One table drives three things: what ingest extracts from a header, which index column holds
it, and how a C-FIND or QIDO-RS key on it is matched (PS3.4 C.2.2.2). Attributes whose value
the archive computes (``ModalitiesInStudy``, ``NumberOfStudyRelatedInstances``, ...) are
here too, marked ``computed``.
"""

from dataclasses import dataclass
from enum import Enum


class Level(str, Enum):
    """Query/Retrieve levels, named as in (0008,0052) Query/Retrieve Level."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        return _DEPTH[self]


_DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.IMAGE: 3}


class Kind(str, Enum):
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
T, N, U, D, TM, I, DS = Kind.TEXT, Kind.NAME, Kind.UID, Kind.DATE, Kind.TIME, Kind.INT, Kind.DECIMAL

ATTRIBUTES: tuple[Attribute, ...] = (
    # Patient
    _a("PatientID", P, "patient_id", T),
    _a("IssuerOfPatientID", P, "issuer", T),
    _a("PatientName", P, "patient_name", N),
    _a("PatientBirthDate", P, "birth_date", D),
    _a("PatientSex", P, "sex", T),
    _a("OtherPatientIDs", P, "other_patient_ids", T, multi=True),
    _a("NumberOfPatientRelatedStudies", P, "num_studies", I, computed=True),
    _a("NumberOfPatientRelatedSeries", P, "num_series", I, computed=True),
    _a("NumberOfPatientRelatedInstances", P, "num_instances", I, computed=True),
    # Study
    _a("StudyInstanceUID", ST, "study_instance_uid", U),
    _a("StudyDate", ST, "study_date", D),
    _a("StudyTime", ST, "study_time", TM),
    _a("AccessionNumber", ST, "accession_number", T),
    _a("StudyID", ST, "study_id", T),
    _a("StudyDescription", ST, "study_description", T),
    _a("ReferringPhysicianName", ST, "referring_physician_name", N),
    _a("PatientAge", ST, "patient_age", T),
    _a("PatientSize", ST, "patient_size", DS),
    _a("PatientWeight", ST, "patient_weight", DS),
    _a("ModalitiesInStudy", ST, "modalities_in_study", Kind.MODALITIES, computed=True),
    _a("SOPClassesInStudy", ST, "sop_classes_in_study", U, computed=True, multi=True),
    _a("NumberOfStudyRelatedSeries", ST, "num_series", I, computed=True),
    _a("NumberOfStudyRelatedInstances", ST, "num_instances", I, computed=True),
    # Series
    _a("SeriesInstanceUID", SE, "series_instance_uid", U),
    _a("Modality", SE, "modality", T),
    _a("SeriesNumber", SE, "series_number", I),
    _a("SeriesDescription", SE, "series_description", T),
    _a("BodyPartExamined", SE, "body_part_examined", T),
    _a("SeriesDate", SE, "series_date", D),
    _a("SeriesTime", SE, "series_time", TM),
    _a("Laterality", SE, "laterality", T),
    _a("ViewPosition", SE, "view_position", T),
    _a("ProtocolName", SE, "protocol_name", T),
    _a("StationName", SE, "station_name", T),
    _a("InstitutionName", SE, "institution_name", T),
    _a("Manufacturer", SE, "manufacturer", T),
    _a("ManufacturerModelName", SE, "manufacturer_model_name", T),
    _a("PerformedProcedureStepStartDate", SE, "pps_start_date", D),
    _a("PerformedProcedureStepStartTime", SE, "pps_start_time", TM),
    _a("NumberOfSeriesRelatedInstances", SE, "num_instances", I, computed=True),
    # Instance
    _a("SOPInstanceUID", IM, "sop_instance_uid", U),
    _a("SOPClassUID", IM, "sop_class_uid", U),
    _a("InstanceNumber", IM, "instance_number", I),
    _a("ContentDate", IM, "content_date", D),
    _a("ContentTime", IM, "content_time", TM),
    _a("Rows", IM, "rows", I),
    _a("Columns", IM, "columns", I),
    _a("NumberOfFrames", IM, "number_of_frames", I),
    _a("ImageType", IM, "image_type", T, multi=True),
    _a("SliceThickness", IM, "slice_thickness", DS),
    _a("AvailableTransferSyntaxUID", IM, "transfer_syntax_uid", U, computed=True),
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
