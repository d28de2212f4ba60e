"""Finding studies in the index: the matching rules of C-FIND, shared with QIDO-RS."""

from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from storage import Archive, InvalidQuery, Level, Source, build_query, stage_file
from tests import factories


def store(archive: Archive, tmp_path: Path, ds: object, hospital: str = "BVDKLD") -> None:
    path = factories.write(ds, tmp_path / "src")  # type: ignore[arg-type]
    archive.store(stage_file(path, archive.staging_dir), source=Source("import", hospital=hospital))


@pytest.fixture
def populated(archive: Archive, tmp_path: Path) -> Archive:
    store(
        archive,
        tmp_path,
        factories.image(
            name="Nguyễn^Thị Hằng", patient_id="1", study_date="20260105", study_time="0830"
        ),
    )
    store(
        archive,
        tmp_path,
        factories.image(
            name="Nguyen^Van An", patient_id="2", study_date="20260210", accession="X2"
        ),
    )
    store(
        archive,
        tmp_path,
        factories.chest_cr(name="Trần^Văn Minh", patient_id="3", study_date="20251230", sex="M"),
    )
    store(
        archive, tmp_path, factories.image(name="Đặng^Thu", patient_id="4", study_date="20260301")
    )
    return archive


def names(archive: Archive, level: Level, **keys: str) -> list[str]:
    return sorted(m.values["PatientName"] for m in archive.find(build_query(level, keys)))


def test_wildcard_with_diacritics_finds_and_returns_them_intact(populated: Archive) -> None:
    assert names(populated, Level.STUDY, PatientName="Nguyễn*") == [
        "Nguyen^Van An",
        "Nguyễn^Thị Hằng",
    ]


def test_folded_matching_finds_vietnamese_names_typed_without_diacritics(
    populated: Archive,
) -> None:
    assert names(populated, Level.STUDY, PatientName="NGUYEN*") == [
        "Nguyen^Van An",
        "Nguyễn^Thị Hằng",
    ]
    assert names(populated, Level.PATIENT, PatientName="dang*") == ["Đặng^Thu"]
    assert names(populated, Level.PATIENT, PatientName="nguyen^thi hang") == ["Nguyễn^Thị Hằng"]


def test_case_insensitive_matching_keeps_diacritics_apart(
    populated: Archive, tmp_path: Path
) -> None:
    populated.settings.name_matching = populated.settings.name_matching.CASE_INSENSITIVE
    assert names(populated, Level.STUDY, PatientName="nguyễn*") == ["Nguyễn^Thị Hằng"]
    assert names(populated, Level.STUDY, PatientName="NGUYEN*") == ["Nguyen^Van An"]


def test_text_matching_is_case_sensitive(populated: Archive) -> None:
    assert names(populated, Level.STUDY, AccessionNumber="X2") == ["Nguyen^Van An"]
    assert names(populated, Level.STUDY, AccessionNumber="x2") == []
    assert names(populated, Level.STUDY, AccessionNumber="x*") == []


def test_question_mark_matches_one_character(populated: Archive) -> None:
    assert names(populated, Level.STUDY, PatientID="?") != []
    assert names(populated, Level.STUDY, PatientID="??") == []


def test_percent_and_underscore_are_not_wildcards(populated: Archive) -> None:
    assert names(populated, Level.STUDY, PatientID="%") == []
    assert names(populated, Level.STUDY, PatientID="_") == []


def test_date_range(populated: Archive) -> None:
    assert names(populated, Level.STUDY, StudyDate="20260101-20260228") == [
        "Nguyen^Van An",
        "Nguyễn^Thị Hằng",
    ]
    assert names(populated, Level.STUDY, StudyDate="-20251231") == ["Trần^Văn Minh"]


def test_time_range(populated: Archive) -> None:
    assert names(populated, Level.STUDY, StudyTime="08-09") == ["Nguyễn^Thị Hằng"]


def test_modalities_in_study(populated: Archive) -> None:
    assert names(populated, Level.STUDY, ModalitiesInStudy="CR") == ["Trần^Văn Minh"]
    assert names(populated, Level.STUDY, ModalitiesInStudy="CR\\MR") == ["Trần^Văn Minh"]
    assert len(names(populated, Level.STUDY, ModalitiesInStudy="C*")) == 4


def test_modalities_in_study_in_series_and_instance_queries(populated: Archive) -> None:
    """A study-level key below the study: the series and instances of studies with a CR."""
    assert names(populated, Level.SERIES, ModalitiesInStudy="CR") == ["Trần^Văn Minh"]
    assert names(populated, Level.IMAGE, ModalitiesInStudy="CT\\MR") == [
        "Nguyen^Van An",
        "Nguyễn^Thị Hằng",
        "Đặng^Thu",
    ]


def test_modality_at_study_level_means_modalities_in_study(populated: Archive) -> None:
    assert names(populated, Level.STUDY, Modality="CR") == ["Trần^Văn Minh"]


def test_uid_list(populated: Archive) -> None:
    studies = populated.find(build_query(Level.STUDY, {}))
    uids = [m.values["StudyInstanceUID"] for m in studies[:2]]
    found = populated.find(build_query(Level.STUDY, {"StudyInstanceUID": "\\".join(uids)}))
    assert sorted(m.values["StudyInstanceUID"] for m in found) == sorted(uids)


def test_derived_attributes(archive: Archive, tmp_path: Path) -> None:
    study = generate_uid()
    for ds in factories.ct_series(3, study_uid=study):
        store(archive, tmp_path, ds)
    store(archive, tmp_path, factories.chest_cr(study_uid=study))
    (match,) = archive.find(build_query(Level.STUDY, {"StudyInstanceUID": study}))
    assert match.values["ModalitiesInStudy"] == "CR\\CT"
    assert match.values["NumberOfStudyRelatedSeries"] == 2
    assert match.values["NumberOfStudyRelatedInstances"] == 4
    assert len(match.values["SOPClassesInStudy"].split("\\")) == 2
    (patient,) = archive.find(build_query(Level.PATIENT, {}))
    assert patient.values["NumberOfPatientRelatedInstances"] == 4


def test_patient_ids_are_qualified_by_issuer(archive: Archive, tmp_path: Path) -> None:
    store(archive, tmp_path, factories.image(patient_id="123", name="A^A"), hospital="H1")
    store(archive, tmp_path, factories.image(patient_id="123", name="B^B"), hospital="H2")
    patients = archive.find(build_query(Level.PATIENT, {"PatientID": "123"}))
    assert sorted((p.values["IssuerOfPatientID"], p.values["PatientName"]) for p in patients) == [
        ("H1", "A^A"),
        ("H2", "B^B"),
    ]
    only = archive.find(build_query(Level.PATIENT, {"PatientID": "123", "IssuerOfPatientID": "H2"}))
    assert [p.values["PatientName"] for p in only] == ["B^B"]


def test_issuer_in_the_dataset_wins_over_the_sender(archive: Archive, tmp_path: Path) -> None:
    store(archive, tmp_path, factories.image(issuer="CCCD"), hospital="H1")
    (patient,) = archive.find(build_query(Level.PATIENT, {}))
    assert patient.values["IssuerOfPatientID"] == "CCCD"


def test_lower_level_keys_cannot_be_matched(populated: Archive) -> None:
    with pytest.raises(InvalidQuery, match="SERIES-level key"):
        build_query(Level.STUDY, {"SeriesNumber": "1"})


def test_limit_and_offset(populated: Archive) -> None:
    first = populated.find(build_query(Level.STUDY, {}, limit=2))
    rest = populated.find(build_query(Level.STUDY, {}, limit=10, offset=2))
    assert len(first) == 2
    assert len(rest) == 2
    assert {m.pk for m in first}.isdisjoint(m.pk for m in rest)
