"""A chest X-ray reaches the network the same way from DICOM as from the training JPEGs:
whatever the photometric interpretation, bit depth, window or transfer syntax."""

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from inference.cxr import source_image


def _training_like() -> np.ndarray:
    """A 224 x 224 8-bit picture with structure: what a training JPEG decodes to."""
    y, x = np.mgrid[:224, :224]
    picture = 60 + 120 * np.exp(-(((x - 80) / 40.0) ** 2 + ((y - 110) / 70.0) ** 2))
    picture += 100 * np.exp(-(((x - 150) / 35.0) ** 2 + ((y - 115) / 65.0) ** 2))
    return np.clip(picture, 0, 255).astype(np.uint8)


def _cr(pixels: np.ndarray, *, bits: int = 8) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = ComputedRadiographyImageStorage, generate_uid()
    ds.Modality, ds.BodyPartExamined = "CR", "CHEST"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    ds.PixelData = pixels.astype("<u1" if bits == 8 else "<u2").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_the_same_pixels_wrapped_as_dicom_are_the_same_input() -> None:
    picture = _training_like()
    assert np.array_equal(source_image(_cr(picture)), picture)


def test_monochrome1_is_inverted_back() -> None:
    picture = _training_like()
    ds = _cr(255 - picture)
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert np.array_equal(source_image(ds), picture)


def test_a_12_bit_image_through_its_window() -> None:
    picture = _training_like()
    stored = picture.astype(np.float64) * 8 + 1000  # 12 bits, offset
    ds = _cr(stored.astype(np.uint16), bits=12)
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1000
    ds.WindowCenter, ds.WindowWidth = 1020, 2041  # the picture's range, 8 per grey level
    assert np.abs(source_image(ds).astype(int) - picture.astype(int)).max() <= 1


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless, RLELossless])
def test_compressed_transfer_syntaxes_decode_to_the_same_input(syntax: str) -> None:
    picture = _training_like()
    ds = _cr(picture)
    ds.compress(syntax, generate_instance_uid=False)
    assert np.array_equal(source_image(ds), picture)


def test_another_size_is_squashed_to_224_like_the_training_set() -> None:
    wide = np.tile(_training_like(), (1, 2))  # 224 x 448
    assert source_image(_cr(wide)).shape == (224, 224)
