"""The default chest X-ray model: its network and the exact preparation of its input.

Training (:mod:`inference.training.cxr`) and inference share these functions, so that an
image reaches the network the same way in both. The training data are 224 x 224 greyscale
images squashed to that size regardless of aspect ratio; an image from DICOM is therefore
first turned into 8-bit greyscale (the caller applies the windowing) and squashed to
224 x 224 the same way, then both go through :func:`model_input`.
"""

from collections.abc import Sequence

import numpy as np
import torch
from monai.networks.nets.densenet import DenseNet
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut
from torch.nn import functional

from inference.errors import NotApplicable

SOURCE_SIZE = 224
"""Side of the training images, and of what a DICOM image is squashed to first."""
INPUT_SIZE = 128
"""Side of the network's input."""


def network() -> torch.nn.Module:
    """A small MONAI DenseNet: one greyscale channel in, one logit (pneumonia pattern) out."""
    return DenseNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        init_features=16,
        growth_rate=16,
        block_config=(4, 8, 6),
    )


def model_input(images: np.ndarray) -> torch.Tensor:
    """(N, 224, 224) uint8 greyscale → (N, 1, 128, 128) float in [0, 1]."""
    if images.ndim != 3 or images.shape[1:] != (SOURCE_SIZE, SOURCE_SIZE):
        raise ValueError(f"expected (N, {SOURCE_SIZE}, {SOURCE_SIZE}) images, not {images.shape}")
    batch = torch.from_numpy(np.array(images, dtype=np.uint8)).float() / 255.0  # a copy
    return functional.interpolate(
        batch.unsqueeze(1), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True
    )


def source_image(dataset: Dataset) -> np.ndarray:
    """A chest X-ray from DICOM as the training images are: 8-bit greyscale, windowed,
    dark lungs (MONOCHROME1 inverted), squashed to 224 x 224 whatever its aspect ratio.

    Any transfer syntax the archive accepts is decoded (pydicom's pixel codecs).
    """
    pixels = dataset.pixel_array
    if pixels.ndim == 3 and pixels.shape[-1] == 3:  # colour: its luminance
        pixels = pixels @ np.array([0.299, 0.587, 0.114])
    elif pixels.ndim == 3:  # several frames: the first
        pixels = pixels[0]
    values = apply_modality_lut(pixels, dataset).astype(np.float64)
    window = _window(dataset)
    if window is not None:
        center, width = window
        scaled = (values - (center - 0.5)) / max(width - 1, 1) + 0.5
    else:  # no window: the stored range, as an 8-bit JPEG's 0..255 maps to itself
        bits = int(dataset.get("BitsStored") or 8)
        scaled = values / (2**bits - 1)
    grey = np.clip(scaled * 255 + 0.5, 0, 255).astype(np.uint8)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        grey = 255 - grey
    if grey.shape != (SOURCE_SIZE, SOURCE_SIZE):
        image = Image.fromarray(grey).resize((SOURCE_SIZE, SOURCE_SIZE), Image.Resampling.BILINEAR)
        grey = np.asarray(image, dtype=np.uint8)
    return grey


def _window(dataset: Dataset) -> tuple[float, float] | None:
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        first_center = center[0] if isinstance(center, Sequence) else center
        first_width = width[0] if isinstance(width, Sequence) else width
        return float(first_center), float(first_width)
    except (TypeError, ValueError, IndexError):
        return None


def readable_image(dataset: Dataset) -> np.ndarray:
    """:func:`source_image`, or NotApplicable saying why the image cannot be read."""
    try:
        return source_image(dataset)
    except (ValueError, RuntimeError, NotImplementedError, TypeError, AttributeError) as exc:
        raise NotApplicable(f"the image cannot be read: {exc}") from None


def score(network: torch.nn.Module, image: np.ndarray) -> float:
    """The model's score (0 to 1) for one 224 x 224 8-bit image."""
    with torch.inference_mode():
        return float(torch.sigmoid(network(model_input(image[None]))).item())
