"""C-FIND identifiers: parsed from queries, and encoded exactly as pydicom would encode them."""

import pytest
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from dicom_node.identifiers import build_response, parse_identifier
from storage import InvalidQuery


def _query(charset: str | None, **keys: object) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = "STUDY"
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


VALUES = {
    "PatientName": "Nguyễn^Thị Hằng",
    "PatientID": "P001",
    "StudyInstanceUID": "1.2.840.113619.2.55.3",  # odd length: padded with NUL
    "StudyDate": "20261120",
    "ModalitiesInStudy": "CR\\CT",
    "NumberOfStudyRelatedInstances": 512,
    "PatientWeight": 61.5,
    "StudyDescription": None,
}


def _expected(charset: str, request_keys: dict[str, object], retrieve: bool) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in request_keys:
        value = VALUES.get(keyword)
        if keyword == "ModalitiesInStudy":
            value = ["CR", "CT"]
        if keyword == "PatientWeight":
            value = "61.5"
        ds[keyword] = DataElement(_tag(keyword), _vr(keyword), value, validation_mode=config.IGNORE)
    if retrieve:
        ds.RetrieveAETitle = "DALAT"
    return ds


def _tag(keyword: str) -> int:
    from pydicom.datadict import tag_for_keyword

    return int(tag_for_keyword(keyword))  # type: ignore[arg-type]


def _vr(keyword: str) -> str:
    from pydicom.datadict import dictionary_VR

    return dictionary_VR(_tag(keyword))


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize("charset", ["ISO_IR 192", None])
def test_encoding_matches_pydicom(implicit: bool, charset: str | None) -> None:
    keys = dict.fromkeys(VALUES, "")
    request = parse_identifier(_query(charset, RetrieveAETitle="", **keys), patient_root=False)
    identifier = build_response(request, VALUES, extras=None, retrieve_aet="DALAT")
    expected = _expected("ISO_IR 192", keys, retrieve=True)
    assert identifier.encoded(implicit) == encode(expected, implicit, True)


def test_a_single_byte_query_gets_its_own_character_set_when_values_fit() -> None:
    request = parse_identifier(
        _query("ISO_IR 100", PatientName="", PatientID=""), patient_root=False
    )
    values = {"PatientName": "Müller^François", "PatientID": "P1"}
    identifier = build_response(request, values, extras=None, retrieve_aet="DALAT")
    expected = Dataset()
    expected.SpecificCharacterSet = "ISO_IR 100"
    expected.QueryRetrieveLevel = "STUDY"
    expected.PatientName = "Müller^François"
    expected.PatientID = "P1"
    assert identifier.encoded(True) == encode(expected, True, True)


def test_elements_from_stored_headers_are_written_by_pydicom() -> None:
    request = parse_identifier(_query("ISO_IR 192", ImagePositionPatient=""), patient_root=False)
    stored = Dataset()
    stored.ImagePositionPatient = [0.0, -12.5, 3.25]
    identifier = build_response(request, {}, extras=stored, retrieve_aet="DALAT")
    expected = Dataset()
    expected.SpecificCharacterSet = "ISO_IR 192"
    expected.QueryRetrieveLevel = "STUDY"
    expected.ImagePositionPatient = [0.0, -12.5, 3.25]
    for implicit in (True, False):
        assert identifier.encoded(implicit) == encode(expected, implicit, True)


def test_a_missing_level_is_an_invalid_query() -> None:
    ds = Dataset()
    ds.PatientName = "X*"
    with pytest.raises(InvalidQuery, match="Query/Retrieve Level"):
        parse_identifier(ds, patient_root=True)
