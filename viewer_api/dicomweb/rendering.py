"""Rendered images and thumbnails (PS3.18 8.3.5 and 8.3.6): one frame, windowed to 8 bits,
fitted to a viewport, as JPEG or PNG. Pure functions over a decoded frame.

The window is, in order: the request's ``window=center,width[,function]``, the image's
first Window Center/Width, or the frame's own range. Modality LUT (rescale) first; a
MONOCHROME1 image is inverted so that it looks as it should.
"""

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut

from viewer_api.errors import BadRequest

THUMBNAIL = (128, 128)
_FUNCTIONS = ("linear", "linear-exact", "sigmoid")


@dataclass(frozen=True, slots=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    window: tuple[float, float, str] | None = None
    viewport: tuple[int, int] | None = None
    quality: int = 90


def parse_options(params: Any, media_type: str, *, thumbnail: bool = False) -> RenderOptions:
    """Read ``window``, ``viewport`` and ``quality``; raises BadRequest on bad values."""
    window = None
    if raw := params.get("window"):
        parts = raw.split(",")
        try:
            center, width = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            raise BadRequest("window is center,width[,linear|linear-exact|sigmoid]") from None
        if not (math.isfinite(center) and math.isfinite(width)):
            raise BadRequest("window center and width must be finite numbers")
        function = parts[2].strip().lower() if len(parts) > 2 else "linear"
        if width <= 0 or function not in _FUNCTIONS:
            raise BadRequest("window width must be positive; function linear or sigmoid")
        window = (center, width, function)
    viewport = THUMBNAIL if thumbnail else None
    if raw := params.get("viewport"):
        try:
            width_px, height_px = (int(v) for v in raw.split(",")[:2])
        except ValueError:
            raise BadRequest("viewport is width,height in pixels") from None
        if not (0 < width_px <= 4096 and 0 < height_px <= 4096):
            raise BadRequest("viewport sides must be 1 to 4096 pixels")
        viewport = (width_px, height_px)
    quality = 90
    if raw := params.get("quality"):
        try:
            quality = int(raw)
        except ValueError:  # not a number ('²' passes isdigit), or thousands of digits
            quality = 0
        if not 1 <= quality <= 100:
            raise BadRequest("quality is 1 to 100")
    return RenderOptions(media_type, window, viewport, quality)


def render(frame: np.ndarray, header: Dataset, options: RenderOptions) -> bytes:
    """One decoded frame as an image file of `options.media_type`."""
    if frame.ndim == 3 and frame.shape[-1] in (3, 4):  # colour: shown as it is
        bits = int(header.get("BitsStored") or 8)
        scale = 255 / (2**bits - 1)
        pixels = np.clip(frame[..., :3].astype(np.float64) * scale + 0.5, 0, 255)
        image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    else:
        values = apply_modality_lut(frame, header).astype(np.float64)
        pixels = _to_8_bits(values, options.window or _stored_window(header))
        if header.get("PhotometricInterpretation") == "MONOCHROME1":
            pixels = 255 - pixels
        image = Image.fromarray(pixels, "L")
    if options.viewport:
        image = _fit(image, options.viewport)
    buffer = io.BytesIO()
    if options.media_type == "image/png":
        image.save(buffer, "PNG", optimize=False)
    else:
        image.save(buffer, "JPEG", quality=options.quality)
    return buffer.getvalue()


def _stored_window(header: Dataset) -> tuple[float, float, str] | None:
    center, width = header.get("WindowCenter"), header.get("WindowWidth")
    if center is None or width is None:
        return None
    try:  # the first of several windows (CT's brain and bone windows: 40\\400)
        center_value = float(center[0] if _several(center) else center)
        width_value = float(width[0] if _several(width) else width)
    except (TypeError, ValueError, IndexError):
        return None
    if width_value <= 0:
        return None
    function = str(header.get("VOILUTFunction", "LINEAR")).lower().replace("_", "-")
    return center_value, width_value, function if function in _FUNCTIONS else "linear"


def _several(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _to_8_bits(values: np.ndarray, window: tuple[float, float, str] | None) -> np.ndarray:
    if window is None:
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    else:
        center, width, function = window
        if function == "sigmoid":
            scaled = 1 / (1 + np.exp(-4 * (values - center) / width))
        elif function == "linear-exact":
            scaled = (values - (center - width / 2)) / width
        else:  # PS3.3 C.11.2.1.2.1
            scaled = (values - (center - 0.5)) / (width - 1 if width > 1 else 1) + 0.5
    return np.clip(scaled * 255 + 0.5, 0, 255).astype(np.uint8)


def _fit(image: Image.Image, viewport: tuple[int, int]) -> Image.Image:
    scale = min(viewport[0] / image.width, viewport[1] / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)
