"""Synthetic head-CT series for the head-CT model's tests: air, a skull shell, a brain
ellipsoid and, for the bleeding phantom, a sphere of fresh blood.

CT Image Storage, 16-bit unsigned with RescaleIntercept -1024 (as most scanners write),
axial slices, a patient name with Vietnamese diacritics under ISO_IR 192. Small enough
(by default 64 x 64 pixels at 0.9 mm, 24 slices of 2.5 mm: a head far smaller than any
real one, which the network reads in one tile of about 50 mm) for the three-model
ensemble to read it in about 10 s on one core.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

PATIENT_NAME = "Nguyễn^Thị Hà"
AIR_HU, SKULL_HU, BRAIN_HU, BLOOD_HU = -1000.0, 1000.0, 30.0, 65.0
BRAIN_RADII_MM = (20.0, 22.0, 21.0)
"""Semi-axes of the brain ellipsoid along x (left), y (back), z (head)."""
SKULL_MM = 3.0


@dataclass(frozen=True, slots=True)
class Bleed:
    centre_mm: tuple[float, float, float] = (5.0, -2.0, 2.0)
    """Patient coordinates (x, y, z) of its centre; the head is centred on the origin."""
    radius_mm: float = 10.0

    @property
    def volume_ml(self) -> float:
        return 4.0 / 3.0 * np.pi * self.radius_mm**3 / 1000.0


def head_hu(
    positions: np.ndarray,
    *,
    rows: int,
    columns: int,
    pixel_mm: float,
    bleed: Bleed | None,
    brain_radii_mm: tuple[float, float, float] = BRAIN_RADII_MM,
    skull_mm: float = SKULL_MM,
) -> np.ndarray:
    """HU of the phantom, (slices, rows, columns), for axial slices at the z `positions`."""
    z = positions[:, None, None]
    y = ((np.arange(rows) - (rows - 1) / 2) * pixel_mm)[None, :, None]
    x = ((np.arange(columns) - (columns - 1) / 2) * pixel_mm)[None, None, :]
    a, b, c = brain_radii_mm

    def inside(ax: float, by: float, cz: float) -> np.ndarray:
        return np.asarray((x / ax) ** 2 + (y / by) ** 2 + (z / cz) ** 2 <= 1.0)

    hu = np.full((len(positions), rows, columns), AIR_HU, dtype=np.float32)
    hu[inside(a + skull_mm, b + skull_mm, c + skull_mm)] = SKULL_HU
    hu[inside(a, b, c)] = BRAIN_HU
    if bleed is not None:
        bx, by, bz = bleed.centre_mm
        sphere = (x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2 <= bleed.radius_mm**2
        hu[sphere] = BLOOD_HU
    return hu


def head_ct(
    *,
    bleed: Bleed | None = None,
    rows: int = 64,
    columns: int = 64,
    slices: int = 24,
    pixel_mm: float = 0.9,
    slice_mm: float = 2.5,
    study_uid: str | None = None,
    brain_radii_mm: tuple[float, float, float] = BRAIN_RADII_MM,
    skull_mm: float = SKULL_MM,
) -> list[Dataset]:
    """An axial head-CT series, slices in instance-number order (head to foot, as many
    scanners send them)."""
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    positions = (np.arange(slices) - (slices - 1) / 2) * slice_mm
    hu = head_hu(
        positions,
        rows=rows,
        columns=columns,
        pixel_mm=pixel_mm,
        bleed=bleed,
        brain_radii_mm=brain_radii_mm,
        skull_mm=skull_mm,
    )
    stored = np.clip(np.rint(hu + 1024.0), 0, 65535).astype("<u2")
    out = []
    for number, index in enumerate(range(slices - 1, -1, -1), start=1):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyDate, ds.StudyTime = "20261130", "101010"
        ds.AccessionNumber = "ACCHEAD1"
        ds.Modality = "CT"
        ds.Manufacturer = "Phantom"
        ds.ReferringPhysicianName = "Trần^Văn Minh"
        ds.StudyDescription = "CT sọ não không tiêm"
        ds.SeriesDescription = "Sọ não 2.5 mm"
        ds.PatientName = PATIENT_NAME
        ds.PatientID = "HEAD001"
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "F"
        ds.BodyPartExamined = "HEAD"
        ds.SliceThickness = slice_mm
        ds.KVP = 120
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 2
        ds.InstanceNumber = number
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        half_y, half_x = (rows - 1) / 2 * pixel_mm, (columns - 1) / 2 * pixel_mm
        ds.ImagePositionPatient = [-half_x, -half_y, float(positions[index])]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = float(positions[index])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, columns
        ds.PixelSpacing = [pixel_mm, pixel_mm]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 80
        ds.PixelData = stored[index].tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


def write_series(datasets: Sequence[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.InstanceNumber:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
