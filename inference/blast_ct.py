"""BLAST-CT v1: head-CT lesion segmentation (haemorrhage and oedema), its network and its
tiled ensemble inference.

The network is a DeepMedic-style 3-D fully convolutional network (Monteiro, Newcombe et
al., Lancet Digital Health 2020; 2(6):e314-e322; Apache-2.0), re-implemented here from
the description beside its weights (``models/blast-ct/README.md``) so that its published
state dicts load with ``strict=True``. Five classes come out: background, intraparenchymal
haemorrhage (IPH), extra-axial haemorrhage (EAH), perilesional oedema, intraventricular
haemorrhage (IVH).

Input is a CT volume in Hounsfield units at 1 mm isotropic, in the axes the authors
trained on: (z, y, x) with z towards the head, y towards the back, x towards the
patient's left (:func:`inference.volume.to_patient_axes`). :func:`segment` windows it,
tiles it, runs every network of the ensemble on every tile, averages their softmax and
keeps the most likely class where the window mask allows a prediction.
"""

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise, product

import numpy as np
import torch
from torch import nn
from torch.nn import functional

SCALE_FACTORS = (5, 3, 1)
"""Sub-sampling factor of each pathway (the same on every axis), coarsest first."""
FEATURE_MAPS = (30, 30, 40, 40, 40, 40, 50, 50)
FULLY_CONNECTED = (250, 250)
CLASSES = ("background", "IPH", "EAH", "oedema", "IVH")
IPH, EAH, OEDEMA, IVH = 1, 2, 3, 4
HAEMORRHAGE_CLASSES = (IPH, EAH, IVH)
WINDOW_HU = (-15.0, 100.0)
"""Hounsfield units the network sees; voxels outside it get no prediction."""
CONTEXT = 80
"""Voxels per axis an input tile has beyond its output (40 on each side)."""
MAX_TILE = 70
"""Largest output tile per axis: input 150^3, a few hundred MB, about 8 s a model on a core."""


def _crop_centre(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The centre `size` of the spatial axes of (N, C, *spatial), the authors' way round:
    from ``c // 2 - s // 2`` on an axis of length c."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    starts = [c // 2 - s // 2 for c, s in zip(x.shape[2:], size, strict=True)]
    return x[
        (slice(None), slice(None), *(slice(a, a + s) for a, s in zip(starts, size, strict=True)))
    ]


class PreActivationBlock(nn.Module):
    """BatchNorm, PReLU (one shared slope), unpadded convolution without bias; the input,
    cropped to the output, is added when the channel counts agree."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm3d(in_channels)
        self.prelu = nn.PReLU()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, bias=False)
        self.residual = in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(self.prelu(self.bn(x)))
        if self.residual:
            out = out + _crop_centre(x, out.shape[2:])
        return out


class _SubSample(nn.Module):
    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.factor
        return x[:, :, f // 2 :: f, f // 2 :: f, f // 2 :: f] if f > 1 else x


class _UpSample(nn.Module):
    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        return functional.interpolate(x, scale_factor=float(self.factor), mode="nearest")


class Pathway(nn.Module):
    """Sub-sample, eight 3x3x3 blocks, up-sample; cropped in and out to the common output."""

    def __init__(self, factor: int, in_channels: int = 1) -> None:
        super().__init__()
        self.factor = factor
        channels = (in_channels, *FEATURE_MAPS)
        self.path = nn.Sequential(
            _SubSample(factor),
            *(PreActivationBlock(a, b, 3) for a, b in pairwise(channels)),
            _UpSample(factor),
        )

    def input_size(self, output_size: int) -> int:
        """Input voxels (per axis, at full resolution) this pathway needs for `output_size`."""
        return (math.ceil(output_size / self.factor) + 2 * len(FEATURE_MAPS)) * self.factor

    def forward(self, x: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
        x = _crop_centre(x, [self.input_size(n) for n in output_size])
        return _crop_centre(self.path(x), output_size)


class BlastCT(nn.Module):
    """The BLAST-CT v1 network: (N, 1, *input) windowed CT → (N, 5, *output) logits, where
    each input side is a multiple of 5 and output = input - 80 (:data:`CONTEXT`).

    The state-dict keys are the published ones (``path(5, 5, 5)0.path.1.bn.weight`` ...,
    ``fully_connected.2.conv.weight``), so the authors' files load with ``strict=True``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.pathways: list[Pathway] = []
        for index, factor in enumerate(SCALE_FACTORS):
            pathway = Pathway(factor, in_channels)
            self.add_module(f"path{(factor, factor, factor)}{index}", pathway)
            self.pathways.append(pathway)
        channels = (FEATURE_MAPS[-1] * len(SCALE_FACTORS), *FULLY_CONNECTED, num_classes)
        self.fully_connected = nn.Sequential(
            *(PreActivationBlock(a, b, 1) for a, b in pairwise(channels))
        )
        # Channels-last weights make oneDNN's 3-D convolutions about 15 % faster on a CPU;
        # the state dict's keys and values are the same (loading keeps this layout).
        self.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]

    @staticmethod
    def output_size(input_size: int) -> int:
        coarsest = max(SCALE_FACTORS)
        if input_size % coarsest or input_size <= CONTEXT:
            raise ValueError(
                f"an input side must be a multiple of {coarsest} above {CONTEXT}, not {input_size}"
            )
        return input_size - CONTEXT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = [self.output_size(n) for n in x.shape[2:]]
        features = torch.cat([pathway(x, output) for pathway in self.pathways], dim=1)
        # The last blocks are 1x1x1: run them a slab at a time to bound the memory.
        slab = max(1, (1 << 16) // (output[1] * output[2]))
        return torch.cat(
            [self.fully_connected(features[:, :, z : z + slab]) for z in range(0, output[0], slab)],
            dim=2,
        )


def window(hu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's input and mask: HU clipped to :data:`WINDOW_HU` and mapped onto
    [-1, 1]; the mask is where the HU lay inside the window."""
    low, high = WINDOW_HU
    mask = (hu >= low) & (hu <= high)
    scaled = (2.0 * hu.clamp(low, high) - (low + high)) / (high - low)
    return scaled, mask


def _tiles(extent: int, max_tile: int) -> tuple[int, int]:
    """(tile count, output tile side) covering `extent` voxels with tiles of at most
    `max_tile`, each a multiple of 5 so that its input fits the network."""
    max_tile = max(5, max_tile - max_tile % 5)
    count = math.ceil(extent / max_tile)
    side = 5 * math.ceil(math.ceil(extent / count) / 5)
    return count, side


def segment(
    hu: np.ndarray, networks: Sequence[nn.Module], *, max_tile: int = MAX_TILE
) -> np.ndarray:
    """Labels (uint8, :data:`CLASSES`) for a CT in HU at 1 mm isotropic (z, y, x).

    The volume is covered with output tiles of at most `max_tile` per side (each input
    tile has 40 voxels of context around it, the volume's edge values beyond its border);
    tiles with no voxel inside the window are skipped. Per tile, the softmax of every
    network is averaged and the most likely class kept; voxels outside the window are 0.
    Runs without gradients on the caller's torch threads.
    """
    if hu.ndim != 3:
        raise ValueError(f"expected a (z, y, x) volume, not shape {hu.shape}")
    if not networks:
        raise ValueError("no network to run")
    with torch.inference_mode(), _denormals_flushed():
        scaled, mask = window(torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32)))
        labels = torch.zeros(hu.shape, dtype=torch.uint8)
        if not bool(mask.any()):
            return labels.numpy()
        low, high = [], []  # the mask's bounding box
        for axis in range(3):
            present = mask.any(dim=[a for a in range(3) if a != axis]).nonzero()
            low.append(int(present[0]))
            high.append(int(present[-1]) + 1)
        plan = [_tiles(b - a, max_tile) for a, b in zip(low, high, strict=True)]
        margin = CONTEXT // 2
        padding = []  # torch's pad order: last axis first, (before, after)
        for axis in (2, 1, 0):
            count, side = plan[axis]
            end = low[axis] + count * side + margin
            padding += [max(0, margin - low[axis]), max(0, end - hu.shape[axis])]
        shift = [padding[4], padding[2], padding[0]]
        padded = functional.pad(scaled[None, None], padding, mode="replicate")
        for corner in product(*(range(count) for count, _ in plan)):
            start = [low[a] + corner[a] * plan[a][1] for a in range(3)]
            stop = [min(start[a] + plan[a][1], hu.shape[a]) for a in range(3)]
            region = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
            tile_mask = mask[region]
            if not bool(tile_mask.any()):
                continue
            tile = padded[
                (
                    slice(None),
                    slice(None),
                    *(
                        slice(
                            start[a] + shift[a] - margin, start[a] + shift[a] + plan[a][1] + margin
                        )
                        for a in range(3)
                    ),
                )
            ]
            probabilities = torch.softmax(networks[0](tile), dim=1)
            for network in networks[1:]:
                probabilities += torch.softmax(network(tile), dim=1)
            best = probabilities[0].argmax(dim=0).to(torch.uint8)  # the mean's argmax
            best = best[tuple(slice(0, b - a) for a, b in zip(start, stop, strict=True))]
            labels[region] = torch.where(tile_mask, best, 0)
    return labels.numpy()


@contextmanager
def _denormals_flushed() -> Iterator[None]:
    """The network's activations fade into denormal floats far from the head; on Intel CPUs
    each costs a microcode assist (a test phantom: 200 s instead of 10 s). Flushed to zero,
    they change no label. The flag is the thread's: it is put back for the caller."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@dataclass(frozen=True, slots=True)
class LesionVolumes:
    """Millilitres of each kind of lesion, and of haemorrhage (IPH + EAH + IVH)."""

    iph: float
    eah: float
    oedema: float
    ivh: float

    @property
    def haemorrhage(self) -> float:
        return self.iph + self.eah + self.ivh

    def describe(self) -> str:
        return (
            f"IPH {self.iph:.1f} mL, EAH {self.eah:.1f} mL, IVH {self.ivh:.1f} mL, "
            f"oedema {self.oedema:.1f} mL"
        )


def haemorrhage_ml(labels: np.ndarray, voxel_volume_mm3: float) -> LesionVolumes:
    """The volume of each lesion class in `labels`, each voxel `voxel_volume_mm3`."""
    counts = np.bincount(labels.ravel(), minlength=len(CLASSES))
    ml = [float(count) * voxel_volume_mm3 / 1000.0 for count in counts]
    return LesionVolumes(iph=ml[IPH], eah=ml[EAH], oedema=ml[OEDEMA], ivh=ml[IVH])
