"""C-FIND, Patient Root and Study Root, every level, over real associations."""

import struct
from pathlib import Path

import pytest
from pydicom import config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind as PatientRootFind,
)
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind as StudyRootFind,
)
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet as StudyRootGet,
)
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelMove as StudyRootMove,
)

from dicom_node import DicomSettings
from dicom_node.node import DicomNode
from storage import Archive, PeerRegistry
from tests import factories
from tests.conftest import associate
from tests.reliability.wire import IMPLICIT_LE, RawAssociation, command_set


@pytest.fixture
def stored(node: DicomNode, tmp_path: Path) -> list[Dataset]:
    datasets = [
        *factories.ct_series(2, name="Nguyễn^Thị Hằng", patient_id="1", study_date="20260105"),
        factories.chest_cr(name="Nguyen^Van An", patient_id="2", study_date="20260210"),
        factories.chest_cr(name="Trần^Văn Minh", patient_id="3", study_date="20251230"),
    ]
    assoc = associate(node.port, CTImageStorage, "1.2.840.10008.5.1.4.1.1.1")
    for path in factories.write_all(datasets, tmp_path):
        assert assoc.send_c_store(path).Status == 0
    assoc.release()
    return datasets


def query(level: str, charset: str | None = "ISO_IR 192", **keys: object) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        tag = tag_for_keyword(keyword)
        assert tag is not None, keyword
        # No validation: some tests send invalid values on purpose.
        ds[tag] = DataElement(tag, dictionary_VR(tag), value, validation_mode=config.IGNORE)
    return ds


def find(
    port: int, identifier: Dataset, model: str = StudyRootFind
) -> tuple[list[Dataset], Dataset]:
    assoc = associate(port, model)
    assert assoc.is_established
    responses = list(assoc.send_c_find(identifier, model))
    assoc.release()
    matches = [ds for status, ds in responses if status.Status == 0xFF00]
    final = responses[-1][0]
    return matches, final


def test_study_level_by_vietnamese_name(node: DicomNode, stored: list[Dataset]) -> None:
    matches, final = find(
        node.port,
        query(
            "STUDY",
            PatientName="Nguyễn*",
            StudyInstanceUID="",
            ModalitiesInStudy="",
            NumberOfStudyRelatedInstances="",
            RetrieveAETitle="",
        ),
    )
    assert final.Status == 0
    by_name = {str(m.PatientName): m for m in matches}
    assert set(by_name) == {"Nguyễn^Thị Hằng", "Nguyen^Van An"}
    hang = by_name["Nguyễn^Thị Hằng"]
    assert hang.SpecificCharacterSet == "ISO_IR 192"
    assert hang.StudyInstanceUID == stored[0].StudyInstanceUID
    assert hang.ModalitiesInStudy == "CT"
    assert hang.NumberOfStudyRelatedInstances == 2
    assert hang.RetrieveAETitle == "DALAT"


def test_diacritic_free_query_finds_vietnamese_names(
    node: DicomNode, stored: list[Dataset]
) -> None:
    matches, _ = find(node.port, query("STUDY", charset=None, PatientName="TRAN*"))
    assert [str(m.PatientName) for m in matches] == ["Trần^Văn Minh"]
    assert matches[0].SpecificCharacterSet == "ISO_IR 192"


def test_responses_use_the_query_character_set_when_it_fits(
    node: DicomNode, stored: list[Dataset]
) -> None:
    matches, _ = find(
        node.port,
        query("PATIENT", charset="ISO_IR 100", PatientName="Nguyen^Van*"),
        PatientRootFind,
    )
    assert [m.SpecificCharacterSet for m in matches] == ["ISO_IR 100"]
    matches, _ = find(
        node.port, query("PATIENT", charset="ISO_IR 100", PatientName="Nguy*"), PatientRootFind
    )
    assert {m.SpecificCharacterSet for m in matches} == {"ISO_IR 100", "ISO_IR 192"}


def test_every_level_of_patient_root(node: DicomNode, stored: list[Dataset]) -> None:
    ct = stored[0]
    patients, _ = find(
        node.port,
        query("PATIENT", PatientID="1", PatientName="", NumberOfPatientRelatedInstances=""),
        PatientRootFind,
    )
    assert [(p.PatientName, p.NumberOfPatientRelatedInstances) for p in patients] == [
        ("Nguyễn^Thị Hằng", 2)
    ]
    series, _ = find(
        node.port,
        query(
            "SERIES",
            PatientID="1",
            StudyInstanceUID=ct.StudyInstanceUID,
            SeriesInstanceUID="",
            Modality="",
            NumberOfSeriesRelatedInstances="",
        ),
        PatientRootFind,
    )
    assert [
        (s.SeriesInstanceUID, s.Modality, s.NumberOfSeriesRelatedInstances) for s in series
    ] == [(ct.SeriesInstanceUID, "CT", 2)]
    images, _ = find(
        node.port,
        query(
            "IMAGE",
            PatientID="1",
            StudyInstanceUID=ct.StudyInstanceUID,
            SeriesInstanceUID=ct.SeriesInstanceUID,
            SOPInstanceUID="",
            InstanceNumber="",
        ),
        PatientRootFind,
    )
    assert sorted((i.InstanceNumber, i.SOPInstanceUID) for i in images) == [
        (1, stored[0].SOPInstanceUID),
        (2, stored[1].SOPInstanceUID),
    ]


def test_keys_the_index_has_no_column_for_come_from_stored_headers(
    node: DicomNode, stored: list[Dataset]
) -> None:
    ct = stored[0]
    images, _ = find(
        node.port,
        query("IMAGE", SOPInstanceUID=ct.SOPInstanceUID, ImagePositionPatient="", PixelSpacing=""),
    )
    assert images[0].ImagePositionPatient == [0, 0, 1]
    assert images[0].PixelSpacing == [0.5, 0.5]


def test_date_range_and_uid_list(node: DicomNode, stored: list[Dataset]) -> None:
    matches, _ = find(node.port, query("STUDY", StudyDate="20260101-20261231", PatientName=""))
    assert len(matches) == 2
    uids = "\\".join([stored[0].StudyInstanceUID, stored[3].StudyInstanceUID])
    matches, _ = find(node.port, query("STUDY", StudyInstanceUID=uids))
    assert {m.StudyInstanceUID for m in matches} == {
        stored[0].StudyInstanceUID,
        stored[3].StudyInstanceUID,
    }


def test_no_match_is_a_plain_success(node: DicomNode, stored: list[Dataset]) -> None:
    matches, final = find(node.port, query("STUDY", PatientID="nobody"))
    assert (matches, final.Status) == ([], 0)


@pytest.mark.parametrize(
    ("identifier", "model", "comment"),
    [
        (query("SERIESX"), StudyRootFind, "Query/Retrieve Level 'SERIESX' is not valid"),
        (query("PATIENT"), StudyRootFind, "the Study Root model has no PATIENT level"),
        (query("STUDY", SeriesNumber="2"), StudyRootFind, "SeriesNumber is a SERIES-level key"),
        (query("STUDY", StudyDate="2026-01"), StudyRootFind, "StudyDate: '2026' is not valid"),
    ],
)
def test_bad_identifiers_are_refused_with_a900(
    node: DicomNode, identifier: Dataset, model: str, comment: str
) -> None:
    matches, final = find(node.port, identifier, model)
    assert matches == []
    assert final.Status == 0xA900
    assert final.ErrorComment.startswith(comment)


@pytest.mark.parametrize(
    ("service", "model", "command_field"),
    [
        ("C-FIND", StudyRootFind, 0x0020),
        ("C-MOVE", StudyRootMove, 0x0021),
        ("C-GET", StudyRootGet, 0x0010),
    ],
)
def test_a_request_without_its_sop_class_is_refused_not_left_unanswered(
    node: DicomNode, service: str, model: str, command_field: int
) -> None:
    """pynetdicom drops a request that lacks a required field without a word, and the peer
    waits out its DIMSE timeout; the archive answers 0xC000 naming what is missing."""
    assoc = RawAssociation(node.port, [(model, IMPLICIT_LE)], timeout=10)
    assert assoc.outcome == "accepted"
    fields = [  # no Affected SOP Class UID (0000,0002)
        (0x00000100, struct.pack("<H", command_field)),
        (0x00000110, struct.pack("<H", 7)),
        (0x00000700, struct.pack("<H", 0)),
        (0x00000800, struct.pack("<H", 0x0101)),  # no identifier follows either
    ]
    if service == "C-MOVE":
        fields.append((0x00000600, b"TESTSCU "))  # Move Destination
    answer = assoc.command(model, IMPLICIT_LE, command_set(fields))
    assert answer.status == 0xC000, answer
    assert answer.comment.startswith(f"the {service} request lacks AffectedSOPClassUID")
    assert assoc.release()


def test_too_many_matches_are_refused(
    archive: Archive, peers: PeerRegistry, stored: list[Dataset]
) -> None:
    settings = DicomSettings(dicom_port=0, find_max_results=2, _env_file=None)
    node = DicomNode(archive, settings, host="127.0.0.1")
    node.start()
    try:
        matches, final = find(node.port, query("STUDY", PatientName="*"))
    finally:
        node.stop()
    assert matches == []
    assert final.Status == 0xA700
    assert final.ErrorComment == "more than 2 matches; narrow the query"
