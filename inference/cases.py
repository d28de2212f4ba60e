"""A hospital's labelled cases for evaluating a model: the labels file, and the file each
label names, found as the archive would route it.

Cases are DICOM files and 8-bit PNG/JPEG images under one folder; a CSV names each case (a
file under the folder, or a StudyInstanceUID) and its label. A DICOM case is what the
model's routing rule would send it (:mod:`inference.routing`; a study's first image of the
series the rule picks), prepared by :func:`inference.cxr.readable_image`; an image file is
read as the training images were.
"""

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from inference.cxr import SOURCE_SIZE, readable_image
from inference.errors import EvaluationError, LabelsError, NotApplicable
from inference.routing import Rule, SeriesFacts, choose

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABEL_WORDS = {"1": 1, "0": 0, "positive": 1, "negative": 0, "yes": 1, "no": 0}
_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")
_EIGHT_BIT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"}


@dataclass(frozen=True, slots=True)
class Label:
    row: int
    """The line of the labels file."""
    case: str
    label: int


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    """As the labels file names it: a path under the cases folder or a StudyInstanceUID."""
    label: int
    path: Path | None
    """The file to score; None when the case cannot be scored (see `problem`)."""
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Unmatched:
    """A label row that names no case."""

    row: int
    case: str
    reason: str


@dataclass(frozen=True, slots=True)
class Cases:
    found: list[Case]
    unmatched: list[Unmatched]


def read_labels(path: Path) -> list[Label]:
    """The rows of a labels CSV: a header with ``case`` and ``label`` columns (others are
    ignored), labels 1/0, positive/negative or yes/no.

    Raises:
        LabelsError: unreadable, no such columns, an empty case, an unknown label, or a
            case labelled twice.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            header = [name.strip().lower() for name in next(reader, [])]
            if "case" not in header or "label" not in header:
                raise LabelsError(
                    f"{path}: the first line must be a header with the columns case,label; "
                    f"found {','.join(header) or 'nothing'}"
                )
            at_case, at_label = header.index("case"), header.index("label")
            labels: list[Label] = []
            first_row: dict[str, int] = {}
            for values in reader:
                if not any(value.strip() for value in values):
                    continue
                row = reader.line_num
                if len(values) <= max(at_case, at_label):
                    raise LabelsError(f"{path} line {row}: expected case,label, not {values}")
                case = values[at_case].strip().replace("\\", "/")
                word = values[at_label].strip().lower()
                if not case:
                    raise LabelsError(f"{path} line {row}: the case is empty")
                if word not in LABEL_WORDS:
                    raise LabelsError(
                        f"{path} line {row}: label {values[at_label]!r} is not 1/0, "
                        "positive/negative or yes/no"
                    )
                if case in first_row:
                    raise LabelsError(
                        f"{path} line {row}: {case} is labelled again (first on line "
                        f"{first_row[case]})"
                    )
                first_row[case] = row
                labels.append(Label(row, case, LABEL_WORDS[word]))
    except UnicodeDecodeError:
        raise LabelsError(f"{path} is not UTF-8 text") from None
    except csv.Error as exc:
        raise LabelsError(f"{path} is not a CSV file: {exc}") from None
    except OSError as exc:
        raise LabelsError(f"cannot read {path}: {exc.strerror or exc}") from None
    return labels


def find_cases(folder: Path, labels: list[Label], rule: Rule | None, model: str) -> Cases:
    """Each label's file under `folder`: the file it names, or, for a StudyInstanceUID, the
    first image of the series the archive would give `model` (its routing `rule` over the
    study's DICOM files found; None: the first series). Series by series number, images by
    instance number, as the inference service orders them."""
    root = folder.resolve()
    found: list[Case] = []
    unmatched: list[Unmatched] = []
    studies: dict[str, dict[str, list[_Header]]] | None = None
    for label in labels:
        path = (root / label.case).resolve()
        if not path.is_relative_to(root):
            unmatched.append(Unmatched(label.row, label.case, "outside the cases folder"))
        elif path.is_file():
            found.append(Case(label.case, label.label, path))
        elif _UID.match(label.case):
            if studies is None:
                studies = _dicom_studies(root)
            series = studies.get(label.case)
            if series is None:
                reason = "no such file, and no DICOM file of a study with this UID"
                unmatched.append(Unmatched(label.row, label.case, reason))
            else:
                found.append(_study_case(label, series, rule, model))
        else:
            unmatched.append(Unmatched(label.row, label.case, "no such file in the cases folder"))
    return Cases(found, unmatched)


@dataclass(frozen=True, slots=True)
class _Header:
    path: Path
    study_instance_uid: str
    series_instance_uid: str
    series_number: int | None
    instance_number: int | None
    modality: str
    body_part: str
    view_position: str
    description: str
    slice_thickness: float | None


def _header(path: Path) -> _Header:
    ds = dcmread(path, stop_before_pixels=True)
    return _header_of(ds, path)


def _header_of(ds: Dataset, path: Path) -> _Header:
    return _Header(
        path=path,
        study_instance_uid=str(ds.get("StudyInstanceUID") or ""),
        series_instance_uid=str(ds.get("SeriesInstanceUID") or ""),
        series_number=_number(ds.get("SeriesNumber")),
        instance_number=_number(ds.get("InstanceNumber")),
        modality=str(ds.get("Modality") or "").upper(),
        body_part=str(ds.get("BodyPartExamined") or "").upper(),
        view_position=str(ds.get("ViewPosition") or "").upper(),
        description=str(ds.get("SeriesDescription") or ""),
        slice_thickness=_float(ds.get("SliceThickness")),
    )


def _facts(uid: str, headers: list[_Header]) -> SeriesFacts:
    """What the index would say of a series made of `headers` (inference.studies)."""
    first = headers[0]
    thickness = [h.slice_thickness for h in headers if h.slice_thickness is not None]
    return SeriesFacts(
        series_instance_uid=uid,
        series_number=first.series_number,
        modality=first.modality,
        body_part=first.body_part,
        view_position=first.view_position,
        description=first.description,
        instances=len(headers),
        slice_thickness=(min(thickness), max(thickness)) if thickness else None,
    )


def _dicom_studies(root: Path) -> dict[str, dict[str, list[_Header]]]:
    """The DICOM files under `root` (headers only), by study and series UID."""
    studies: dict[str, dict[str, list[_Header]]] = {}
    for folder, _dirs, names in os.walk(root):
        for name in sorted(names):
            path = Path(folder) / name
            if path.suffix.lower() in IMAGE_SUFFIXES:
                continue
            try:
                header = _header(path)
            except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError):
                continue  # not DICOM: a label names it by path, or nothing does
            series = studies.setdefault(header.study_instance_uid, {})
            series.setdefault(header.series_instance_uid, []).append(header)
    return studies


def _number(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _float(value: object) -> float | None:
    try:
        return float(str(value))
    except (TypeError, ValueError):
        return None


def _study_case(
    label: Label, series: dict[str, list[_Header]], rule: Rule | None, model: str
) -> Case:
    facts = [_facts(uid, headers) for uid, headers in series.items()]
    try:
        chosen = choose(rule or Rule(), model, facts).series_instance_uid
    except NotApplicable as exc:
        return Case(label.case, label.label, None, exc.reason)
    images = sorted(
        series[chosen],
        key=lambda h: (h.instance_number is None, h.instance_number or 0, str(h.path)),
    )
    return Case(label.case, label.label, images[0].path)


def image_file_pixels(path: Path) -> np.ndarray:
    """An 8-bit PNG or JPEG read as the training images were: greyscale, squashed to
    224 x 224 (bilinear) whatever its aspect ratio."""
    try:
        with Image.open(path) as opened:
            if opened.mode not in _EIGHT_BIT_MODES:
                raise EvaluationError(
                    f"a {opened.mode} image is not 8-bit; give the DICOM or an 8-bit export"
                )
            image = opened.convert("L")
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"the image cannot be read: {exc}") from None
    if image.size != (SOURCE_SIZE, SOURCE_SIZE):
        image = image.resize((SOURCE_SIZE, SOURCE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def dicom_pixels(path: Path, rule: Rule | None, model: str) -> np.ndarray:
    """The image of a DICOM file as the inference service prepares it, if `rule` (the
    model's routing rule) would send its series to the model."""
    try:
        dataset = dcmread(path)
    except InvalidDicomError:
        raise EvaluationError("neither DICOM nor a PNG/JPEG image") from None
    if len(dataset) == 0:
        raise EvaluationError("a DICOM file with nothing readable in it (empty or broken)")
    header = _header_of(dataset, path)
    refusal = (rule or Rule()).refusal(_facts(header.series_instance_uid, [header]))
    if refusal is not None:
        raise EvaluationError(f"not for {model}: {refusal}")
    try:
        return readable_image(dataset)
    except NotApplicable as exc:
        raise EvaluationError(exc.reason) from None


def case_pixels(path: Path, rule: Rule | None, model: str) -> np.ndarray:
    """The 224 x 224 8-bit image of a case file, by its kind."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return image_file_pixels(path)
    return dicom_pixels(path, rule, model)
