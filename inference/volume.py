"""A CT series as one volume: its slices in order along the slice normal, in Hounsfield
units, and the ways onto a 1 mm isotropic grid in the patient's axes and back.

:func:`assemble` refuses (:class:`~inference.errors.NotApplicable`, with the reason) a
series it cannot make one regular volume of: slices without geometry, of several
orientations or sizes, with a gap or a duplicate, too few, or a multi-frame image.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pydicom.dataset import Dataset
from torch.nn import functional

from inference.errors import NotApplicable

MIN_SLICES = 20
GAP_TOLERANCE = 0.10
"""How far (a fraction of the median) a slice gap may differ from the median gap."""
ORIENTATION_TOLERANCE = 1e-3


@dataclass(frozen=True, slots=True)
class Volume:
    """A series' pixels in HU, (slice, row, column), slices ascending along the normal."""

    hu: np.ndarray
    spacing: tuple[float, float, float]
    """Millimetres between slices, rows and columns."""
    direction: np.ndarray
    """3 x 3; column i is the patient-space (LPS) direction of array axis i."""
    origin: tuple[float, float, float]
    """ImagePositionPatient of the first slice."""
    slices: tuple[Dataset, ...]
    """The source instances in the volume's slice order (their headers)."""


def _number(ds: Dataset, keyword: str, default: float) -> float:
    value = ds.get(keyword)
    return default if value is None or value == "" else float(value)


def _geometry(ds: Dataset, index: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    missing = [
        keyword
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
        if not ds.get(keyword)
    ]
    if missing:
        raise NotApplicable(
            f"slice {ds.get('InstanceNumber', index)} has no {', '.join(missing)}; "
            "cannot place it in a volume"
        )
    position = np.array([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
    orientation = np.array([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    if position.shape != (3,) or orientation.shape != (6,):
        raise NotApplicable(f"slice {ds.get('InstanceNumber', index)} has malformed geometry")
    return position, orientation, (row_spacing, column_spacing)


def assemble(datasets: Sequence[Dataset], *, min_slices: int = MIN_SLICES) -> Volume:
    """One CT series (any order) as a volume in HU; NotApplicable says why it cannot be."""
    if len(datasets) < max(min_slices, 2):
        raise NotApplicable(f"{len(datasets)} slices; a head CT volume needs at least {min_slices}")
    for index, ds in enumerate(datasets):
        if int(ds.get("NumberOfFrames") or 1) > 1:
            raise NotApplicable("multi-frame CT images are not supported (one slice a file)")
        if ds.get("Modality") != "CT":
            raise NotApplicable(f"slice {index} is {ds.get('Modality')!r}, not CT")
        if int(ds.get("SamplesPerPixel") or 1) != 1:
            raise NotApplicable("colour images are not CT slices")
    series = {ds.get("SeriesInstanceUID") for ds in datasets}
    if len(series) > 1:
        raise NotApplicable(f"the slices come from {len(series)} series, not one")
    geometry = [_geometry(ds, index) for index, ds in enumerate(datasets)]
    orientation = geometry[0][1]
    if any(np.abs(g[1] - orientation).max() > ORIENTATION_TOLERANCE for g in geometry):
        raise NotApplicable("the slices have different orientations (ImageOrientationPatient)")
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(sizes) > 1:
        raise NotApplicable(f"the slices have different sizes (Rows x Columns: {sorted(sizes)})")
    pixel_spacings = {g[2] for g in geometry}
    if len(pixel_spacings) > 1:
        raise NotApplicable("the slices have different PixelSpacing")
    row, column = orientation[:3], orientation[3:]
    normal = np.cross(row, column)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-2):
        raise NotApplicable("ImageOrientationPatient is not two orthogonal unit vectors")
    along = np.array([float(g[0] @ normal) for g in geometry])
    order = np.argsort(along, kind="stable")
    along = along[order]
    gaps = np.diff(along)
    if (gaps < 1e-3).any():
        at = along[1:][gaps < 1e-3][0]
        raise NotApplicable(f"two slices share the position {at:.2f} mm along the normal")
    median = float(np.median(gaps))
    uneven = np.abs(gaps - median) > GAP_TOLERANCE * median
    if uneven.any():
        first = int(np.argmax(uneven))
        raise NotApplicable(
            f"uneven slice spacing: {gaps[first]:.2f} mm after {along[first]:.2f} mm where "
            f"the series has {median:.2f} mm (a missing slice?)"
        )
    ordered = tuple(datasets[i] for i in order)
    hu = np.empty((len(ordered), *sizes.pop()), dtype=np.float32)
    for index, ds in enumerate(ordered):
        try:
            pixels = ds.pixel_array
        except (AttributeError, ValueError, RuntimeError) as exc:
            raise NotApplicable(
                f"slice {ds.get('InstanceNumber', index)}: no pixels ({exc})"
            ) from None
        slope = _number(ds, "RescaleSlope", 1.0)
        intercept = _number(ds, "RescaleIntercept", 0.0)
        hu[index] = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    row_spacing, column_spacing = pixel_spacings.pop()
    # Array axes: slice index along the normal, row index along the column direction
    # cosines, column index along the row direction cosines (PS3.3 C.7.6.2.1.1).
    direction = np.stack([normal, column, row], axis=1)
    first = geometry[order[0]][0]
    return Volume(
        hu=hu,
        spacing=(median, row_spacing, column_spacing),
        direction=direction,
        origin=(float(first[0]), float(first[1]), float(first[2])),
        slices=ordered,
    )


@dataclass(frozen=True, slots=True)
class AxisMap:
    """How the array's axes map onto the patient's (z, y, x) = (S, P, L) axes."""

    permutation: tuple[int, int, int]
    """Array axis that becomes patient axis 0, 1, 2."""
    flips: tuple[bool, bool, bool]
    """Whether each patient axis, once permuted, runs backwards."""


def patient_axes(direction: np.ndarray) -> AxisMap:
    """The nearest permutation and flips that bring a volume with this `direction` into
    (z, y, x) ascending towards head, back and left, as the network was trained."""
    nearest = np.abs(direction).argmax(axis=0)  # patient axis (x=0, y=1, z=2) of each array axis
    if sorted(nearest.tolist()) != [0, 1, 2]:
        raise NotApplicable("the slices are too oblique to tell axial from coronal or sagittal")
    z, y, x = (int(np.flatnonzero(nearest == axis)[0]) for axis in (2, 1, 0))
    flips = [bool(direction[2 - t, array_axis] < 0) for t, array_axis in enumerate((z, y, x))]
    return AxisMap((z, y, x), (flips[0], flips[1], flips[2]))


def to_patient_axes(array: np.ndarray, axes: AxisMap) -> np.ndarray:
    out = np.transpose(array, axes.permutation)
    for axis, flip in enumerate(axes.flips):
        if flip:
            out = np.flip(out, axis)
    return np.ascontiguousarray(out)


def from_patient_axes(array: np.ndarray, axes: AxisMap) -> np.ndarray:
    out = array
    for axis, flip in enumerate(axes.flips):
        if flip:
            out = np.flip(out, axis)
    return np.ascontiguousarray(np.transpose(out, np.argsort(axes.permutation)))


def isotropic_shape(
    shape: Sequence[int], spacing: Sequence[float], step: float = 1.0
) -> tuple[int, ...]:
    """Grid points, per axis, of `step` mm spanning the same extent (first to last voxel)."""
    return tuple(max(1, round((n - 1) * s / step) + 1) for n, s in zip(shape, spacing, strict=True))


def resample(
    array: np.ndarray, spacing: Sequence[float], step: float = 1.0
) -> tuple[np.ndarray, tuple[float, ...]]:
    """`array` trilinearly resampled onto a grid of about `step` mm that keeps its first and
    last voxels; returns it and its exact spacing (extent / (points - 1))."""
    shape = isotropic_shape(array.shape, spacing, step)
    exact = tuple(
        (n - 1) * s / (m - 1) if m > 1 else s
        for n, s, m in zip(array.shape, spacing, shape, strict=True)
    )
    source = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    with torch.inference_mode():
        out = functional.interpolate(source, size=shape, mode="trilinear", align_corners=True)
    return out[0, 0].numpy(), exact


def labels_to_grid(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Labels on the resampled grid brought back (nearest voxel) onto a grid of `shape`
    spanning the same extent, such as the source slices."""
    index = [
        np.rint(np.arange(n) * ((m - 1) / (n - 1) if n > 1 else 0.0)).astype(np.intp)
        for n, m in zip(shape, labels.shape, strict=True)
    ]
    return np.ascontiguousarray(labels[np.ix_(*index)])
