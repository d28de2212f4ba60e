"""The head-CT haemorrhage runner: one CT series in, a measurement report (and, when a
lesion is found, a segmentation) out.

The series is assembled into a volume (:mod:`inference.volume`), turned into the
patient's axes and resampled to 1 mm, segmented by the ensemble (:mod:`inference.blast_ct`)
and measured there; the labels are brought back onto the source slices (nearest voxel) so
that the DICOM SEG lies on the images it was read from. The lead calls
:func:`run_head_ct` in a model worker process.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from inference.blast_ct import LesionVolumes, haemorrhage_ml, segment
from inference.bundles import BundleInfo
from inference.errors import NotApplicable
from inference.head_ct_results import haemorrhage_report, lesion_segmentation
from inference.outcomes import ModelResult
from inference.results import derived_uid
from inference.volume import (
    MIN_SLICES,
    Volume,
    assemble,
    from_patient_axes,
    labels_to_grid,
    patient_axes,
    resample,
    to_patient_axes,
)

FINDING = "intracranial haemorrhage"


@dataclass(frozen=True, slots=True)
class Segmented:
    labels: np.ndarray
    """Lesion classes on the source grid (slice, row, column), as the volume's slices."""
    lesions: LesionVolumes
    """Measured on the 1 mm grid the network read."""


def segment_volume(volume: Volume, networks: Sequence[torch.nn.Module]) -> Segmented:
    """The ensemble's labels for `volume`, on its own grid, and the lesions' volumes."""
    axes = patient_axes(volume.direction)
    hu = to_patient_axes(volume.hu, axes)
    spacing = [volume.spacing[axis] for axis in axes.permutation]
    iso, iso_spacing = resample(hu, spacing)
    labels = segment(iso, networks)
    lesions = haemorrhage_ml(labels, math.prod(iso_spacing))
    back = from_patient_axes(labels_to_grid(labels, hu.shape), axes)
    return Segmented(back, lesions)


def run_head_ct(
    bundle: BundleInfo,
    networks: list[torch.nn.Module],
    sources: list[Path],
    *,
    threshold_ml: float,
    out_dir: Path,
    uid_key: list[str],
    min_slices: int = MIN_SLICES,
) -> ModelResult:
    """Read one CT series, segment it, write the SR (and a SEG when a lesion is found) into
    `out_dir`, and say how much haemorrhage there is.

    The UIDs of what is written derive from `uid_key`: the same job run twice writes the
    same instances.

    Raises:
        NotApplicable: the files are not one regular CT volume (the reason says why).
    """
    datasets = []
    for source in sources:
        try:
            datasets.append(dcmread(source))
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise NotApplicable(f"{source.name} cannot be read as DICOM: {exc}") from None
    volume = assemble(datasets, min_slices=min_slices)
    result = segment_volume(volume, networks)
    score = round(result.lesions.haemorrhage, 3)
    flagged = score >= threshold_ml
    out_dir.mkdir(parents=True, exist_ok=True)
    segmentation = lesion_segmentation(
        volume,
        result.labels,
        bundle,
        series_instance_uid=derived_uid(*uid_key, "seg-series"),
        sop_instance_uid=derived_uid(*uid_key, "seg"),
        uid_key=uid_key,
        ensemble=len(networks),
    )
    report = haemorrhage_report(
        volume,
        bundle,
        result.lesions,
        threshold_ml=threshold_ml,
        series_instance_uid=derived_uid(*uid_key, "sr-series"),
        sop_instance_uid=derived_uid(*uid_key, "sr"),
        uid_key=uid_key,
        ensemble=len(networks),
        segmentation=segmentation,
    )
    files = [out_dir / "head-ct-report.dcm"]
    report.save_as(files[0], enforce_file_format=True)
    if segmentation is not None:
        files.append(out_dir / "head-ct-segmentation.dcm")
        segmentation.save_as(files[1], enforce_file_format=True)
    return ModelResult(
        score=score,
        flagged=flagged,
        finding=FINDING,
        series_instance_uid=str(volume.slices[0].SeriesInstanceUID),
        files=files,
        result_sop_instance_uid=str(report.SOPInstanceUID),
        detail=result.lesions.describe(),
    )
