"""Synthetic DICOM instances for the tests (small, deterministic, Vietnamese names included)."""

import os
from collections.abc import Iterator
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)

VIETNAMESE_NAME = "Nguyễn^Thị Hằng"


def patient(
    ds: Dataset,
    *,
    name: str = VIETNAMESE_NAME,
    patient_id: str = "P001",
    issuer: str | None = None,
    birth_date: str = "19800101",
    sex: str = "F",
) -> None:
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = name
    ds.PatientID = patient_id
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex


def image(
    *,
    sop_class: str = CTImageStorage,
    modality: str = "CT",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    rows: int = 16,
    columns: int = 16,
    instance_number: int = 1,
    study_date: str = "20261120",
    study_time: str = "101010",
    accession: str = "ACC001",
    transfer_syntax: str = ExplicitVRLittleEndian,
    seed: int | None = None,
    **patient_kwargs: str,
) -> Dataset:
    """A small image with valid pixel data (native, or JPEG 2000-shaped fragments)."""
    ds = Dataset()
    patient(ds, **patient_kwargs)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.AccessionNumber = accession
    ds.StudyID = "1"
    ds.StudyDescription = "Chụp CT sọ não"
    ds.ReferringPhysicianName = "Trần^Văn Minh"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Axial"
    ds.BodyPartExamined = "HEAD" if modality == "CT" else "CHEST"
    ds.InstanceNumber = instance_number
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.ImagePositionPatient = [0, 0, instance_number]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    pixels = _pixels(rows * columns * 2, seed)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if transfer_syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        ds.PixelData = pixels
    else:  # shaped like compressed data: never decoded by the archive
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + pixels[:64]])
        ds["PixelData"].VR = "OB"
    return ds


def _pixels(size: int, seed: int | None) -> bytes:
    if seed is None:
        return os.urandom(size)
    return bytes((seed * 31 + i * 7) % 251 for i in range(size))


def ct_series(count: int, **kwargs: str) -> list[Dataset]:
    study_uid = kwargs.pop("study_uid", None) or generate_uid()
    series_uid = kwargs.pop("series_uid", None) or generate_uid()
    return [
        image(study_uid=study_uid, series_uid=series_uid, instance_number=i + 1, **kwargs)
        for i in range(count)
    ]


def chest_cr(**kwargs: str) -> Dataset:
    return image(sop_class=ComputedRadiographyImageStorage, modality="CR", **kwargs)


def j2k_ct(**kwargs: str) -> Dataset:
    return image(transfer_syntax=JPEG2000Lossless, **kwargs)


def write(ds: Dataset, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{ds.SOPInstanceUID}.dcm")
    ds.save_as(path, enforce_file_format=True)
    return path


def write_all(datasets: list[Dataset], folder: Path) -> list[Path]:
    return [write(ds, folder) for ds in datasets]


def dataset_bytes(path: Path) -> bytes:
    """The bytes a stored file must keep: everything after the 128-byte preamble."""
    return path.read_bytes()[128:]


def after_meta(path: Path) -> bytes:
    """The dataset bytes after the File Meta Information: what a C-STORE carries."""
    data = path.read_bytes()
    # (0002,0000) UL at offset 132: tag (4), VR (2), length (2), then the 4-byte value.
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length :]


def iter_files(folder: Path) -> Iterator[Path]:
    yield from sorted(p for p in folder.rglob("*") if p.is_file())
