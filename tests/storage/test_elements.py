"""The fast header reader and pydicom must agree; the fast one steps aside when unsure."""

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

from storage import stage_file
from storage.elements import scan
from storage.headers import _WANTED, _read_with_pydicom, read_header
from tests import factories


def _with_sequences(ds: Dataset) -> Dataset:
    code = Dataset()
    code.CodeValue = "T-D1100"
    code.CodingSchemeDesignator = "SRT"
    code.CodeMeaning = "Đầu"
    nested = Dataset()
    nested.ConceptNameCodeSequence = Sequence([code])
    ds.AnatomicRegionSequence = Sequence([code, nested])
    ds.ReferencedStudySequence = Sequence([])
    ds.add_new(0x00091010, "LO", "Private value")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    return ds


def _latin1(ds: Dataset) -> Dataset:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^François"
    ds.StudyDescription = "Thorax für Kinder"
    return ds


CASES = {
    "explicit CT": lambda: factories.image(),
    "implicit CT": lambda: factories.image(transfer_syntax=ImplicitVRLittleEndian),
    "JPEG 2000": lambda: factories.j2k_ct(),
    "chest CR": lambda: factories.chest_cr(name="Trần^Văn Minh", study_time="0830"),
    "sequences and private tags": lambda: _with_sequences(factories.image()),
    "implicit with sequences": lambda: _with_sequences(
        factories.image(transfer_syntax=ImplicitVRLittleEndian)
    ),
    "Latin-1": lambda: _latin1(factories.image()),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_fast_reader_agrees_with_pydicom(tmp_path: Path, case: str) -> None:
    ds = CASES[case]()
    path = stage_file(factories.write(ds, tmp_path / "src", "x.dcm"), tmp_path).path
    data = path.read_bytes()
    assert scan(data, len(data), _WANTED) is not None, "the fast path should take this file"
    fast = read_header(path)
    slow = _read_with_pydicom(path, None)
    assert fast == slow


def test_it_steps_aside_for_big_endian_and_truncation(tmp_path: Path) -> None:
    path = stage_file(factories.write(factories.image(), tmp_path / "src", "x.dcm"), tmp_path).path
    data = path.read_bytes()
    big_endian = data.replace(b"1.2.840.10008.1.2.1\0", b"1.2.840.10008.1.2.2\0", 1)
    assert scan(big_endian, len(big_endian), _WANTED) is None
    header_end = data.index(b"\xe0\x7f\x10\x00")  # Pixel Data
    truncated = data[: header_end - 3]  # inside the element before the pixel data
    assert scan(truncated, len(truncated), _WANTED) is None
    assert scan(data[:300], len(data), _WANTED) is None  # read too little: not a verdict


def test_it_refuses_to_recurse_without_bound(tmp_path: Path) -> None:
    from tests.storage.test_headers import _nested_sequences

    path = stage_file(factories.write(factories.image(), tmp_path / "src", "x.dcm"), tmp_path).path
    data = path.read_bytes()
    at = data.index(b"\xe0\x7f\x10\x00")
    deep = data[:at] + _nested_sequences(100) + data[at:]
    assert scan(deep, len(deep), _WANTED) is None
