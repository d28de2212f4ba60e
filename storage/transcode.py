"""Instances in another transfer syntax: decoded and re-encoded by pydicom's pixel codecs
(pylibjpeg for JPEG, JPEG 2000 and RLE, pyjpegls for JPEG-LS).

Used only when a client asks for a syntax other than the stored one: everything else is
sent as stored, never decoded. The SOP Instance UID is kept (the stored instance is the
archive's copy; this is a rendition for the wire). Lossy syntaxes are produced only when a
client names them.
"""

import io
from pathlib import Path

from pydicom import dcmread
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from storage.errors import CannotTranscode

UNCOMPRESSED = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
LOSSLESS_TARGETS = frozenset({JPEG2000Lossless, JPEGLSLossless, RLELossless})
LOSSY_TARGETS = frozenset({JPEG2000, JPEGLSNearLossless})
TARGETS = UNCOMPRESSED | LOSSLESS_TARGETS | LOSSY_TARGETS
"""Every transfer syntax an instance can be asked for in."""

J2K_COMPRESSION_RATIO = 10.0
"""JPEG 2000 lossy: the compression ratio asked of the encoder."""
JLS_NEAR_LOSSLESS_ERROR = 2
"""JPEG-LS near-lossless: the largest difference from the original of any pixel value."""


def _decodable(syntax: str) -> bool:
    if syntax in UNCOMPRESSED or syntax == "1.2.840.10008.1.2.2":
        return True
    try:
        return bool(get_decoder(UID(syntax)).is_available)
    except (NotImplementedError, ValueError):
        return False


def _encodable(syntax: str) -> bool:
    if syntax in UNCOMPRESSED:
        return True
    try:
        return bool(get_encoder(UID(syntax)).is_available)
    except (NotImplementedError, ValueError):
        return False


def effective_syntax(stored: str, target: str, *, has_pixels: bool) -> str:
    """The syntax an instance is sent in when `target` is asked for: an instance without
    pixel data asked for in a compressed syntax goes in Explicit VR Little Endian."""
    if not has_pixels and target not in UNCOMPRESSED and target != stored:
        return ExplicitVRLittleEndian
    return target


def can_transcode(stored: str, target: str, *, has_pixels: bool = True) -> bool:
    target = effective_syntax(stored, target, has_pixels=has_pixels)
    if target == stored:
        return True
    if target not in TARGETS:
        return False
    if not has_pixels:
        return True
    return _decodable(stored) and _encodable(target)


def transcode(path: Path, target: str) -> bytes:
    """The Part 10 file at `path` re-encoded in `target` (see :func:`effective_syntax`).

    Raises:
        CannotTranscode: no codec, or the codec refused the pixel data.
    """
    try:
        dataset = dcmread(path, force=True)
        stored = str(dataset.file_meta.TransferSyntaxUID)
        has_pixels = "PixelData" in dataset
        target = effective_syntax(stored, target, has_pixels=has_pixels)
        if not can_transcode(stored, target, has_pixels=has_pixels):
            raise CannotTranscode(f"no codec turns {UID(stored).name} into {UID(target).name}")
        if has_pixels and UID(stored).is_compressed:
            dataset.decompress(generate_instance_uid=False)
        if has_pixels and UID(target).is_compressed:
            options: dict[str, object] = {}
            if target == JPEG2000:
                options["j2k_cr"] = [J2K_COMPRESSION_RATIO]
            elif target == JPEGLSNearLossless:
                options["jls_error"] = JLS_NEAR_LOSSLESS_ERROR
            original_size = len(dataset.PixelData)
            dataset.compress(target, generate_instance_uid=False, **options)  # type: ignore[arg-type]
            if target in LOSSY_TARGETS:  # PS3.3 C.7.6.1.1.5: say so, and how much
                dataset.LossyImageCompression = "01"
                ratio = original_size / max(1, len(dataset.PixelData))
                dataset.LossyImageCompressionRatio = [f"{ratio:.2f}"]
                dataset.LossyImageCompressionMethod = [
                    "ISO_15444_1" if target == JPEG2000 else "ISO_14495_1"
                ]
        else:
            dataset.file_meta.TransferSyntaxUID = UID(target)
        buffer = io.BytesIO()
        dataset.save_as(
            buffer,
            implicit_vr=target == ImplicitVRLittleEndian,
            little_endian=True,
            enforce_file_format=True,
        )
    except CannotTranscode:
        raise
    except (ValueError, RuntimeError, TypeError, AttributeError, KeyError, OSError) as exc:
        raise CannotTranscode(f"cannot re-encode in {UID(target).name}: {exc}") from None
    return buffer.getvalue()
