"""Reading and checking headers: good files parse, bad files are refused with a reason."""

import struct
import warnings
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from storage import InconsistentInstance, InvalidInstance, Level, StorageError, stage_file
from storage.headers import read_header
from tests import factories


def staged(tmp_path: Path, ds: Dataset) -> Path:
    return stage_file(factories.write(ds, tmp_path / "src", "instance.dcm"), tmp_path).path


def test_reads_what_the_index_keeps(tmp_path: Path) -> None:
    ds = factories.image(patient_id="123", accession="A-9", study_time="1010")
    header = read_header(staged(tmp_path, ds))
    assert header.sop_instance_uid == ds.SOPInstanceUID
    assert header.study_instance_uid == ds.StudyInstanceUID
    patient = header.values[Level.PATIENT]
    assert patient["patient_name"] == "Nguyễn^Thị Hằng"
    assert patient["patient_name_folded"] == "NGUYEN^THI HANG"
    assert patient["patient_name_upper"] == "NGUYỄN^THỊ HẰNG"
    assert header.values[Level.STUDY]["study_time"] == "101000"
    assert header.values[Level.STUDY]["accession_number"] == "A-9"
    assert header.values[Level.IMAGE]["rows"] == 16
    assert header.pixel_data_length == 16 * 16 * 2


def test_header_bytes_hold_the_header_and_not_the_pixels(tmp_path: Path) -> None:
    path = staged(tmp_path, factories.image(rows=64, columns=64))
    header = read_header(path)
    assert header.header_bytes is not None
    raw = zlib.decompress(header.header_bytes)
    assert raw.startswith(b"DICM")
    assert len(raw) < 4096
    assert header.pixel_data_offset is not None
    data = path.read_bytes()
    assert data[header.pixel_data_offset :] == dcmread(path).PixelData


@pytest.mark.parametrize("factory", [factories.image, factories.j2k_ct, factories.chest_cr])
def test_reads_native_and_encapsulated(tmp_path: Path, factory: object) -> None:
    ds = factory()  # type: ignore[operator]
    assert read_header(staged(tmp_path, ds)).sop_instance_uid == ds.SOPInstanceUID


def test_reads_implicit_little_endian(tmp_path: Path) -> None:
    ds = factories.image(transfer_syntax=ImplicitVRLittleEndian)
    header = read_header(staged(tmp_path, ds))
    assert header.transfer_syntax_uid == ImplicitVRLittleEndian


# -- the bad-file corpus ------------------------------------------------------------------


def _good(tmp_path: Path) -> Path:
    return staged(tmp_path, factories.image(rows=32, columns=32))


def _truncate(path: Path, keep: int) -> Path:
    data = path.read_bytes()[:keep]
    path.write_bytes(data)
    return path


def test_refuses_a_file_truncated_in_its_pixel_data(tmp_path: Path) -> None:
    path = _good(tmp_path)
    _truncate(path, path.stat().st_size - 100)
    with pytest.raises(InvalidInstance, match="pixel data declares"):
        read_header(path)


@pytest.mark.parametrize("keep", [10, 131, 140, 200, 300, 420])
def test_refuses_a_file_truncated_in_its_header(tmp_path: Path, keep: int) -> None:
    path = _truncate(_good(tmp_path), keep)
    with pytest.raises(InvalidInstance):
        read_header(path)


def test_refuses_an_image_cut_off_before_its_pixel_data(tmp_path: Path) -> None:
    path = _good(tmp_path)
    pixel_element = read_header(path).pixel_data_offset - 12  # type: ignore[operator]
    path.write_bytes(path.read_bytes()[:pixel_element])  # ends cleanly, on an element boundary
    with pytest.raises(InconsistentInstance, match="no pixel data"):
        read_header(path)


def test_refuses_pixel_data_that_lies_about_its_length(tmp_path: Path) -> None:
    """A 4 GiB declared length in a small file (would be stored silently truncated)."""
    path = _good(tmp_path)
    header = read_header(path)
    assert header.pixel_data_offset is not None
    data = bytearray(path.read_bytes())
    data[header.pixel_data_offset - 4 : header.pixel_data_offset] = struct.pack("<I", 0xFFFFFFF0)
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidInstance, match="pixel data declares 4294967280 bytes"):
        read_header(path)


def test_refuses_pixel_data_shorter_than_rows_times_columns(tmp_path: Path) -> None:
    ds = factories.image(rows=32, columns=32)
    ds.PixelData = ds.PixelData[:1000]
    with pytest.raises(InconsistentInstance, match="pixel data has 1000 bytes"):
        read_header(staged(tmp_path, ds))


@pytest.mark.parametrize("missing", ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"])
def test_refuses_a_dataset_without_a_required_uid(tmp_path: Path, missing: str) -> None:
    ds = factories.image()
    delattr(ds, missing)
    with pytest.raises(InconsistentInstance, match=f"no {missing}"):
        read_header(staged(tmp_path, ds))


def test_refuses_a_uid_with_path_characters(tmp_path: Path) -> None:
    ds = factories.image()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the value being set
        ds.SeriesInstanceUID = "../../etc/cron.d/x"
    with pytest.raises(InconsistentInstance, match="characters other than digits"):
        read_header(staged(tmp_path, ds))


def test_refuses_a_dataset_whose_uid_differs_from_its_meta(tmp_path: Path) -> None:
    ds = factories.image(sop_uid="1.2.3.4.5")
    path = staged(tmp_path, ds)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"1.2.3.4.5\0", b"1.2.3.4.6\0", 1))  # the meta's copy
    with pytest.raises(InconsistentInstance, match="does not match"):
        read_header(path)


def test_refuses_encapsulated_pixel_data_without_its_delimiter(tmp_path: Path) -> None:
    path = staged(tmp_path, factories.j2k_ct())
    _truncate(path, path.stat().st_size - 8)  # drop the sequence delimiter item
    with pytest.raises(InvalidInstance, match="sequence delimiter"):
        read_header(path)


def test_refuses_garbage(tmp_path: Path) -> None:
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 40)
    with pytest.raises(InvalidInstance):
        read_header(path)


def test_refuses_a_file_that_is_not_dicom_at_import(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("Kết quả chụp phim: bình thường\n" * 20)
    with pytest.raises(StorageError):
        read_header(stage_file(path, tmp_path))


def _nested_sequences(depth: int) -> bytes:
    """(0040,A730) Content Sequence items nested `depth` deep, undefined lengths throughout."""
    opening = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0" + b"\xff" * 4
    opening += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return opening * depth + closing * depth


@pytest.mark.parametrize("depth", [20_000])
def test_refuses_deeply_nested_sequences(tmp_path: Path, depth: int) -> None:
    path = _good(tmp_path)
    pixel_element = read_header(path).pixel_data_offset - 12  # type: ignore[operator]
    data = path.read_bytes()
    path.write_bytes(data[:pixel_element] + _nested_sequences(depth) + data[pixel_element:])
    with pytest.raises(InvalidInstance):
        read_header(path)


def test_zeroes_a_polyglot_preamble_at_import(tmp_path: Path) -> None:
    source = factories.write(factories.image(), tmp_path / "src")
    data = bytearray(source.read_bytes())
    data[:4] = b"MZ\x90\x00"  # a PE header in the preamble (CVE-2019-11687)
    data[64:68] = b"PE\0\0"
    source.write_bytes(bytes(data))
    result = stage_file(source, tmp_path)
    stored = result.path.read_bytes()
    assert stored[:128] == b"\0" * 128
    assert stored[128:] == bytes(data[128:])
    read_header(result.path)


def test_adds_meta_to_a_bare_dataset_at_import(tmp_path: Path) -> None:
    ds = factories.image(transfer_syntax=ImplicitVRLittleEndian)
    source = tmp_path / "bare.dcm"
    ds.save_as(source, implicit_vr=True, little_endian=True, enforce_file_format=False)
    body = source.read_bytes()
    result = stage_file(source, tmp_path)
    assert result.path.read_bytes().endswith(body)
    assert read_header(result.path).sop_instance_uid == ds.SOPInstanceUID


def _deflated(tmp_path: Path, ds: Dataset) -> Path:
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "src" / "deflated.dcm"
    path.parent.mkdir(exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return stage_file(path, tmp_path).path


def test_refuses_deflated_files_unless_enabled(tmp_path: Path) -> None:
    path = _deflated(tmp_path, factories.image())
    with pytest.raises(InvalidInstance, match="Deflated transfer syntax is not accepted"):
        read_header(path)
    assert read_header(path, inflate_limit=10 * 2**20).sop_class_uid


def test_caps_a_deflate_bomb(tmp_path: Path) -> None:
    ds = factories.image(rows=2048, columns=2048)  # 8 MiB of pixels
    ds.PixelData = b"\0" * len(ds.PixelData)  # which deflate to a few KiB
    path = _deflated(tmp_path, ds)
    assert path.stat().st_size < 100_000
    with pytest.raises(InvalidInstance, match="inflates past the limit of 1048576 bytes"):
        read_header(path, inflate_limit=2**20)
