"""Benchmark data, generated once into a cache folder (never into the repository).

* ``ct``: one study of 500 axial CT slices, 512 x 512, 16-bit (~0.5 MB each)
* ``dx``: 200 chest X-rays (DX), 2500 x 2048, 16-bit (~10 MB each)
* ``find``: 2,000 small studies of about 1,200 patients, names drawn with Vietnamese
  family-name frequencies (Nguyễn about four in ten), dates over 2024-2025

Pixel values are random: the archives store bytes and never look at them.
"""

import os
import random
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

DATA = Path(os.environ.get("DALAT_BENCH_DATA", "/tmp/dalat-bench-data"))

FAMILY = [
    ("Nguyễn", 38),
    ("Trần", 11),
    ("Lê", 9),
    ("Phạm", 7),
    ("Hoàng", 5),
    ("Huỳnh", 5),
    ("Phan", 4),
    ("Vũ", 4),
    ("Võ", 4),
    ("Đặng", 2),
    ("Bùi", 2),
    ("Đỗ", 2),
    ("Hồ", 2),
    ("Ngô", 2),
    ("Dương", 1),
    ("Lý", 1),
]
GIVEN = [
    "Thị Hằng",
    "Văn Minh",
    "Thị Lan",
    "Văn Hùng",
    "Thị Mai",
    "Quốc Bảo",
    "Ngọc Anh",
    "Đức Thắng",
    "Thu Trang",
    "Minh Tuấn",
    "Thị Hoa",
    "Văn Nam",
]


@dataclass(frozen=True)
class Corpus:
    root: Path
    find_studies: int

    def groups(self, case: str, count: int) -> list[Path]:
        """The case's files split into `count` folders of links (one per association)."""
        source = self.root / case
        target = self.root / f"{case}-by-{count}"
        if not target.exists():
            staging = self.root / f".{case}-by-{count}"
            files = sorted(source.iterdir())
            for index, path in enumerate(files):
                folder = staging / str(index % count)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / path.name).symlink_to(path)
            staging.rename(target)
        return sorted(p for p in target.iterdir() if p.is_dir())


def _image(ds: Dataset, sop_class: str, rows: int, columns: int, pixels: bytes) -> Dataset:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _patient(ds: Dataset, name: str, patient_id: str, date: str) -> None:
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName, ds.PatientID = name, patient_id
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = date, "101010", patient_id[-6:]


def _write_all(folder: Path, datasets: object) -> None:
    staging = folder.with_name(f".{folder.name}")
    staging.mkdir(parents=True, exist_ok=True)
    for index, ds in enumerate(datasets):  # type: ignore[call-overload]
        ds.save_as(staging / f"{index:05d}.dcm", enforce_file_format=True)
    staging.rename(folder)


def _ct(count: int) -> object:
    study, series = generate_uid(), generate_uid()
    for index in range(count):
        ds = Dataset()
        _patient(ds, "Nguyễn^Thị Hằng", "P000001", "20251120")
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.InstanceNumber = "CT", index + 1
        ds.ImagePositionPatient = [0, 0, index]
        yield _image(ds, CTImageStorage, 512, 512, os.urandom(512 * 512 * 2))


def _dx(count: int) -> object:
    for index in range(count):
        ds = Dataset()
        _patient(ds, "Trần^Văn Minh", f"P{index:06d}", "20251120")
        ds.Modality, ds.InstanceNumber = "DX", 1
        yield _image(
            ds, DigitalXRayImageStorageForPresentation, 2500, 2048, os.urandom(2500 * 2048 * 2)
        )


def _studies(count: int) -> object:
    rng = random.Random(3)
    families = [name for name, weight in FAMILY for _ in range(weight)]
    patients = [
        (f"{rng.choice(families)}^{rng.choice(GIVEN)}", f"P{i:06d}")
        for i in range(int(count * 0.6))
    ]
    for index in range(count):
        name, patient_id = patients[index % len(patients)]
        day = rng.randrange(730)
        date = f"{2024 + day // 365}{1 + (day % 365) // 31:02d}{1 + (day % 31) % 28:02d}"
        ds = Dataset()
        _patient(ds, name, patient_id, date)
        ds.Modality = rng.choice(["CR", "DX", "CT"])
        yield _image(
            ds,
            CTImageStorage if ds.Modality == "CT" else DigitalXRayImageStorageForPresentation,
            64,
            64,
            os.urandom(64 * 64 * 2),
        )


def generate(root: Path, *, quick: bool) -> Corpus:
    root = root / ("quick" if quick else "full")
    counts = {"ct": 100, "dx": 40, "find": 400} if quick else {"ct": 500, "dx": 200, "find": 2000}
    makers = {"ct": _ct, "dx": _dx, "find": _studies}
    for case, count in counts.items():
        if not (root / case).exists():
            print(f"generating {count} {case} files in {root / case}", flush=True)
            _write_all(root / case, makers[case](count))
    return Corpus(root, counts["find"])
