"""A hospital's labelled cases for `pacs model evaluate`, built from the golden chest X-rays:
the originals as JPEG files, and flipped or shifted copies as PNG files and DICOM CRs."""

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid

GOLDEN = Path(__file__).parent.parent / "data" / "cxr-golden"
EXPECTED: dict[str, dict[str, object]] = json.loads((GOLDEN / "scores.json").read_text())


def golden_pixels(name: str) -> np.ndarray:
    return np.asarray(Image.open(GOLDEN / name).convert("L"), dtype=np.uint8)


def label_of(name: str) -> int:
    return 1 if EXPECTED[name]["label"] == "PNEUMONIA" else 0


def write_cr(
    pixels: np.ndarray,
    path: Path,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    description: str = "",
    monochrome1: bool = False,
    modality: str = "CR",
    body_part: str = "CHEST",
    series_number: int = 1,
    instance_number: int = 1,
) -> Dataset:
    """`pixels` as an 8-bit CR file (MONOCHROME1 stored inverted, as a CR reader does)."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = ComputedRadiographyImageStorage, generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesDescription = description
    ds.SeriesNumber, ds.InstanceNumber = series_number, instance_number
    ds.PatientID, ds.PatientName = "CALIB", "Calibration^Case"
    ds.Modality, ds.BodyPartExamined = modality, body_part
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = (255 - pixels if monochrome1 else pixels).astype(np.uint8).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def shifted(pixels: np.ndarray, columns: int) -> np.ndarray:
    """Moved sideways by `columns`, the edge column repeated into the gap."""
    padded = np.pad(pixels, ((0, 0), (abs(columns), abs(columns))), mode="edge")
    start = abs(columns) - columns
    return padded[:, start : start + pixels.shape[1]]


def build(folder: Path) -> tuple[Path, Path]:
    """24 labelled cases (12 pneumonia, 12 normal), plus a broken file and a label for a
    file that is not there. Returns (cases folder, labels CSV)."""
    cases = folder / "cases"
    rows = ["case,label"]
    for name in sorted(EXPECTED):
        stem, label = Path(name).stem, label_of(name)
        word = {1: "positive", 0: "negative"}[label]
        pixels = golden_pixels(name)
        (cases / "jpeg").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(GOLDEN / name, cases / "jpeg" / name)
        rows.append(f"jpeg/{name},{label}")
        write_cr(pixels[:, ::-1], cases / "dicom" / f"{stem}-mirror.dcm", monochrome1=True)
        rows.append(f"dicom/{stem}-mirror.dcm,{word}")
        (cases / "png").mkdir(exist_ok=True)
        Image.fromarray(shifted(pixels, -8)).save(cases / "png" / f"{stem}-left.png")
        rows.append(f"png/{stem}-left.png,{'yes' if label else 'no'}")
        study = write_cr(shifted(pixels, 8), cases / "studies" / stem / "1.dcm").StudyInstanceUID
        rows.append(f"{study},{label}")
    (cases / "dicom" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    rows += ["dicom/broken.dcm,1", "jpeg/not-there.jpeg,0"]
    labels = folder / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return cases, labels
