"""The shipped chest X-ray model: pinned weights, pinned scores, the same score from a
JPEG and from the same pixels in DICOM."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid

from inference.bundles import WEIGHTS, load, sha256_of
from inference.config import SHIPPED_MODELS
from inference.cxr import model_input, source_image
from inference.errors import ModelRefused

BUNDLE = SHIPPED_MODELS / "cxr-pneumonia"
GOLDEN = Path(__file__).parent.parent / "data" / "cxr-golden"
EXPECTED = json.loads((GOLDEN / "scores.json").read_text())


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load(BUNDLE).network


def _score(model: torch.nn.Module, pixels: np.ndarray) -> float:
    with torch.no_grad():
        return float(torch.sigmoid(model(model_input(pixels[None]))).item())


def _jpeg(name: str) -> np.ndarray:
    return np.asarray(Image.open(GOLDEN / name).convert("L"), dtype=np.uint8)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_images_keep_their_scores(model: torch.nn.Module, name: str) -> None:
    assert _score(model, _jpeg(name)) == pytest.approx(EXPECTED[name]["score"], abs=1e-4)


def test_a_training_image_and_the_same_pixels_as_a_dicom_cr_score_the_same(
    model: torch.nn.Module,
) -> None:
    name = "pneumonia-person1008_bacteria_2939.jpeg"
    pixels = _jpeg(name)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = ComputedRadiographyImageStorage, generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = (255 - pixels).tobytes()  # as a CR reader stores it: inverted
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert _score(model, source_image(ds)) == _score(model, pixels)


def test_the_model_separates_the_golden_images(model: torch.nn.Module) -> None:
    threshold = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["threshold"]
    normal = [_score(model, _jpeg(n)) for n, e in EXPECTED.items() if e["label"] == "NORMAL"]
    assert max(normal) < threshold  # no normal one flagged


def test_weights_that_are_not_the_pinned_ones_are_refused(tmp_path: Path) -> None:
    copy = tmp_path / "cxr-pneumonia"
    shutil.copytree(BUNDLE, copy)
    weights = copy / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelRefused, match="refusing to load"):
        load(copy)


def test_weights_that_do_not_fit_the_network_are_refused(tmp_path: Path) -> None:
    copy = tmp_path / "cxr-pneumonia"
    shutil.copytree(BUNDLE, copy)
    torch.save({"not": torch.zeros(1)}, copy / WEIGHTS)
    metadata = json.loads((copy / "configs" / "metadata.json").read_text())
    metadata["weights_sha256"] = sha256_of(copy / WEIGHTS)
    (copy / "configs" / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ModelRefused, match="do not fit"):
        load(copy)


def _model_list(models_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PACS_MODELS_DIR": str(models_dir), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "pacs", "model", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_pacs_model_list(tmp_path: Path) -> None:
    shipped = _model_list(SHIPPED_MODELS)
    assert shipped.returncode == 0, shipped.stderr
    assert "cxr-pneumonia" in shipped.stdout
    assert "ok" in shipped.stdout
    shutil.copytree(BUNDLE, tmp_path / "cxr-pneumonia")
    (tmp_path / "cxr-pneumonia" / WEIGHTS).write_bytes(b"not the weights")
    tampered = _model_list(tmp_path)
    assert tampered.returncode == 1
    assert "refused" in tampered.stdout
