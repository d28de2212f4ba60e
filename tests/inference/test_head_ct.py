"""The experimental head-CT haemorrhage model (BLAST-CT v1): its pinned ensemble, the
volume a CT series becomes (and the series it refuses), and its result as DICOM on
synthetic heads with and without a bleed.

The weights are the copies shipped in models/blast-ct (not ../shared). The model runs on
the three-model ensemble, on phantoms small enough for about 10 s a run on one core.
"""

import copy
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch

from inference.blast_ct import BlastCT, haemorrhage_ml, segment
from inference.bundles import BundleInfo, check_weights, load_ensemble, read_info, sha256_of
from inference.config import SHIPPED_MODELS
from inference.errors import ModelRefused, NotApplicable
from inference.head_ct import run_head_ct
from inference.head_ct_results import HAEMORRHAGE_VOLUME, INTRACRANIAL_HEMORRHAGE
from inference.outcomes import ModelResult
from inference.results import DISCLAIMER, FINDING
from inference.volume import (
    assemble,
    from_patient_axes,
    labels_to_grid,
    patient_axes,
    resample,
    to_patient_axes,
)
from tests.inference.phantoms import PATIENT_NAME, Bleed, head_ct, write_series

BUNDLE = SHIPPED_MODELS / "blast-ct"
UID_KEY = ["1.2.826.0.1.3680043.8.498.1", "blast-ct", "1.0.0", "7"]

Ensemble = tuple[BundleInfo, list[torch.nn.Module]]
BleedRun = tuple[list[Path], ModelResult]


@pytest.fixture(scope="module")
def ensemble() -> Iterator[Ensemble]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a model worker runs it
    yield load_ensemble(BUNDLE, 3)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def normal() -> list[pydicom.Dataset]:
    return head_ct()


@pytest.fixture(scope="module")
def bleed_run(ensemble: Ensemble, tmp_path_factory: pytest.TempPathFactory) -> BleedRun:
    info, networks = ensemble
    folder = tmp_path_factory.mktemp("bleed")
    sources = write_series(head_ct(bleed=Bleed()), folder / "source")
    result = run_head_ct(
        info, networks, sources, threshold_ml=1.0, out_dir=folder / "out", uid_key=UID_KEY
    )
    return sources, result


# The bundle: every file pinned, every file loads exactly.


def test_every_shipped_weights_file_loads_strictly_into_the_network() -> None:
    info = read_info(BUNDLE)
    shipped = sorted(p.relative_to(BUNDLE).as_posix() for p in (BUNDLE / "models").glob("*.pt"))
    assert sorted(info.weights) == shipped
    assert info.metadata["ensemble_size"] == len(shipped) == 3
    for file, sha in info.weights.items():
        assert sha256_of(BUNDLE / file) == sha
        network = BlastCT()
        state = torch.load(BUNDLE / file, map_location="cpu", weights_only=True)
        network.load_state_dict(state, strict=True)
    loaded_info, networks = load_ensemble(BUNDLE)
    assert len(networks) == 3
    assert all(isinstance(n, BlastCT) and not n.training for n in networks)
    assert loaded_info.weights_sha256 == info.weights_sha256  # the combined hash
    assert loaded_info.metadata["runner"] == "head-ct-segmentation"
    assert loaded_info.metadata["default_enabled"] is False
    assert loaded_info.metadata["experimental"] is True


def test_a_tampered_weights_file_is_refused_by_name(tmp_path: Path) -> None:
    copy_ = tmp_path / "blast-ct"
    shutil.copytree(BUNDLE, copy_)
    weights = copy_ / "models" / "model_2.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelRefused, match=r"model_2\.pt .*refusing to load"):
        load_ensemble(copy_, 1)  # even when that file is not among those asked for
    with pytest.raises(ModelRefused, match=r"model_2\.pt"):
        check_weights(read_info(copy_))  # what pacs model list runs


def test_asking_for_more_networks_than_shipped_is_refused() -> None:
    with pytest.raises(ModelRefused, match="has 3"):
        load_ensemble(BUNDLE, 4)


# The volume.


def test_slices_in_any_order_give_the_same_volume(normal: list[pydicom.Dataset]) -> None:
    reference = assemble(normal)
    shuffled = list(normal)
    random.Random(7).shuffle(shuffled)
    volume = assemble(shuffled)
    np.testing.assert_array_equal(volume.hu, reference.hu)
    assert [ds.SOPInstanceUID for ds in volume.slices] == [
        ds.SOPInstanceUID for ds in reference.slices
    ]
    positions = [float(ds.ImagePositionPatient[2]) for ds in volume.slices]
    assert positions == sorted(positions)  # ascending along the normal (feet to head)
    assert volume.spacing == pytest.approx((2.5, 0.9, 0.9))
    assert volume.hu.min() == pytest.approx(-1000)
    assert volume.hu.max() == pytest.approx(1000)


def _without(slices: list[pydicom.Dataset], index: int) -> list[pydicom.Dataset]:
    return slices[:index] + slices[index + 1 :]


def _changed(slices: list[pydicom.Dataset], index: int, **values: object) -> list[pydicom.Dataset]:
    out = list(slices)
    out[index] = copy.deepcopy(slices[index])
    for keyword, value in values.items():
        if value is None:
            delattr(out[index], keyword)
        else:
            setattr(out[index], keyword, value)
    return out


def _duplicate(slices: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
    twin = copy.deepcopy(slices[5])
    twin.SOPInstanceUID = pydicom.uid.generate_uid()
    return [*slices, twin]


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (lambda s: _without(s, 10), "uneven slice spacing.*missing slice"),
        (
            lambda s: _changed(s, 3, ImageOrientationPatient=[1, 0, 0, 0, 0.8, -0.6]),
            "different orientations",
        ),
        (lambda s: s[:12], "12 slices; a head CT volume needs at least 20"),
        (
            lambda s: _changed(s, 4, Rows=32, PixelData=np.zeros((32, 64), "<u2").tobytes()),
            "different sizes",
        ),
        (lambda s: _changed(s, 2, NumberOfFrames=2), "multi-frame.*not supported"),
        (lambda s: _changed(s, 6, ImagePositionPatient=None), "no ImagePositionPatient"),
        (lambda s: _changed(s, 6, PixelSpacing=None), "no PixelSpacing"),
        (_duplicate, "share the position"),
        (lambda s: _changed(s, 1, Modality="MR"), "not CT"),
    ],
    ids=[
        "missing-slice",
        "mixed-orientation",
        "too-few-slices",
        "different-sizes",
        "multi-frame",
        "no-position",
        "no-pixel-spacing",
        "duplicate-position",
        "not-ct",
    ],
)
def test_a_series_that_is_not_one_regular_volume_is_refused_with_its_reason(
    normal: list[pydicom.Dataset],
    spoil: Callable[[list[pydicom.Dataset]], list[pydicom.Dataset]],
    reason: str,
) -> None:
    with pytest.raises(NotApplicable, match=reason):
        assemble(spoil(normal))


def test_the_minimum_number_of_slices_can_be_set(normal: list[pydicom.Dataset]) -> None:
    assert len(assemble(normal[:12], min_slices=10).slices) == 12


def test_a_coronal_volume_is_turned_into_the_patients_axes_and_back() -> None:
    row, column = np.array([1.0, 0, 0]), np.array([0, 0, -1.0])
    direction = np.stack([np.cross(row, column), column, row], axis=1)
    axes = patient_axes(direction)
    array = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    turned = to_patient_axes(array, axes)
    assert turned.shape == (4, 3, 5)  # (z, y, x): rows ran along z
    assert turned[0, 0, 0] == array[0, -1, 0]  # the lowest row is the first z
    np.testing.assert_array_equal(from_patient_axes(turned, axes), array)


def test_labels_on_the_1_mm_grid_come_back_onto_the_source_grid() -> None:
    source = np.zeros((21, 30, 30), np.float32)
    source[8:13, 10:20, 12:18] = 1.0
    iso, spacing = resample(source, (2.5, 0.9, 0.9))
    assert iso.shape == (51, 27, 27)
    assert spacing == pytest.approx((1.0, 29 * 0.9 / 26, 29 * 0.9 / 26))
    back = labels_to_grid((iso > 0.5).astype(np.uint8), source.shape)
    assert back.shape == source.shape
    assert (back == source).mean() > 0.99


def test_haemorrhage_is_the_sum_of_the_three_bleeding_classes() -> None:
    labels = np.array([0, 1, 1, 2, 3, 3, 3, 4], np.uint8)
    volumes = haemorrhage_ml(labels, 500.0)
    assert (volumes.iph, volumes.eah, volumes.oedema, volumes.ivh) == (1.0, 0.5, 1.5, 0.5)
    assert volumes.haemorrhage == 2.0


class _Voxelwise(torch.nn.Module):
    """Sized like BlastCT (output = input - 80, centred); class 1 where the windowed value
    is above 0.2 (about 54 HU), else class 0: what the tiles must put back in place."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x[:, :, 40:-40, 40:-40, 40:-40]
        return torch.cat([torch.zeros_like(centre), centre - 0.2], dim=1)


@pytest.mark.parametrize("max_tile", [5, 12, 70])
def test_tiles_put_every_label_back_on_its_voxel(max_tile: int) -> None:
    rng = np.random.default_rng(3)
    hu = rng.uniform(-40.0, 120.0, size=(17, 23, 12)).astype(np.float32)
    hu[:, :, :2] = -1000.0  # outside the window: no label
    scaled = (2.0 * np.clip(hu, -15.0, 100.0) - 85.0) / 115.0
    expected = ((scaled > 0.2) & (hu >= -15.0) & (hu <= 100.0)).astype(np.uint8)
    np.testing.assert_array_equal(segment(hu, [_Voxelwise()], max_tile=max_tile), expected)


def test_air_alone_is_segmented_as_nothing_without_running_a_network() -> None:
    assert not segment(np.full((20, 20, 20), -1000, np.float32), [torch.nn.Identity()]).any()


# The model on phantoms.


def test_a_normal_head_is_not_flagged_and_gets_no_segmentation(
    ensemble: Ensemble, normal: list[pydicom.Dataset], tmp_path: Path
) -> None:
    info, networks = ensemble
    sources = write_series(normal, tmp_path / "source")
    result = run_head_ct(
        info, networks, sources, threshold_ml=1.0, out_dir=tmp_path / "out", uid_key=UID_KEY
    )
    assert result.score == 0.0
    assert not result.flagged
    assert result.finding == "intracranial haemorrhage"
    assert result.detail == "IPH 0.0 mL, EAH 0.0 mL, IVH 0.0 mL, oedema 0.0 mL"
    assert [path.name for path in result.files] == ["head-ct-report.dcm"]
    sr = pydicom.dcmread(result.files[0])
    assert _finding(sr) == "260413007"  # None
    assert _measurement(sr, HAEMORRHAGE_VOLUME.value) == 0.0


def test_a_bleed_is_flagged_with_a_plausible_volume(bleed_run: BleedRun) -> None:
    _, result = bleed_run
    truth = Bleed().volume_ml  # 4.19 mL; the ensemble says 4.4
    assert result.flagged
    assert 0.7 * truth <= result.score <= 1.5 * truth
    sr = pydicom.dcmread(result.files[0])
    assert _measurement(sr, "IPH_ML") >= 0.7 * truth  # a parenchymal sphere reads as IPH
    assert _measurement(sr, "EAH_ML") + _measurement(sr, "IVH_ML") < 0.1 * truth


def test_the_report_says_what_was_found_by_which_model(bleed_run: BleedRun) -> None:
    sources, result = bleed_run
    sr = pydicom.dcmread(result.files[0])
    assert sr.SOPInstanceUID == result.result_sop_instance_uid
    assert sr.SpecificCharacterSet == "ISO_IR 192"
    assert str(sr.PatientName) == PATIENT_NAME
    assert sr.SeriesDescription.startswith(DISCLAIMER)
    assert sr.StudyInstanceUID == pydicom.dcmread(sources[0]).StudyInstanceUID
    assert _finding(sr) == INTRACRANIAL_HEMORRHAGE.value
    assert _measurement(sr, HAEMORRHAGE_VOLUME.value) == pytest.approx(result.score, abs=1e-3)
    assert _measurement(sr, "THRESHOLD") == 1.0
    assert _measurement(sr, "IPH_ML") > 0
    hd.sr.Comprehensive3DSR.from_dataset(sr)  # highdicom reads it back
    texts = {str(item.TextValue) for item in _items(sr) if item.ValueType == "TEXT"}
    assert {"blast-ct", "ensemble of 3", f"weights {read_info(BUNDLE).weights_sha256}"} <= texts
    assert "ml" in {
        item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue
        for item in _items(sr)
        if item.ValueType == "NUM"
    }


def test_the_segmentation_lies_on_the_source_slices_where_the_bleed_was(
    bleed_run: BleedRun,
) -> None:
    sources, result = bleed_run
    assert [path.name for path in result.files] == [
        "head-ct-report.dcm",
        "head-ct-segmentation.dcm",
    ]
    seg = hd.seg.segread(result.files[1])
    assert seg.SegmentationType == "BINARY"
    assert seg.SeriesDescription.startswith(DISCLAIMER)
    assert str(seg.PatientName) == PATIENT_NAME
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    assert labels[1] == "Intraparenchymal haemorrhage"
    iph = seg.get_segment_description(1)
    assert iph.segmented_property_type == hd.sr.CodedConcept("50960005", "SCT", "Hemorrhage")
    assert "blast-ct" in str(seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence)
    source = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in sources}
    referenced = [uid for _, _, uid in seg.get_source_image_uids()]
    assert set(referenced) <= set(source)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        derived = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert derived.ReferencedSOPInstanceUID in source
    # The IPH voxels' centre, in patient coordinates, is the sphere's centre.
    uids = list(source)
    pixels = seg.get_pixels_by_source_instance(
        uids, segment_numbers=[1], assert_missing_frames_are_empty=True
    )[..., 0]
    points = []
    for uid, mask in zip(uids, pixels, strict=True):
        ds = source[uid]
        rows, columns = np.nonzero(mask)
        x0, y0, z = (float(v) for v in ds.ImagePositionPatient)
        spacing = float(ds.PixelSpacing[0])
        points += [
            (x0 + c * spacing, y0 + r * spacing, z) for r, c in zip(rows, columns, strict=True)
        ]
    centre = np.mean(points, axis=0)
    assert np.linalg.norm(centre - np.array(Bleed().centre_mm)) < 3.0


def test_the_same_job_run_twice_writes_the_same_instances(
    ensemble: Ensemble, bleed_run: BleedRun, tmp_path: Path
) -> None:
    sources, first = bleed_run
    info, networks = ensemble
    again = run_head_ct(
        info, networks, sources, threshold_ml=1.0, out_dir=tmp_path, uid_key=UID_KEY
    )
    assert isinstance(again, ModelResult)
    assert again.result_sop_instance_uid == first.result_sop_instance_uid
    assert again.score == first.score

    def uids(path: Path) -> tuple[str, str]:
        ds = pydicom.dcmread(path)
        return ds.SeriesInstanceUID, ds.SOPInstanceUID

    assert [uids(p) for p in again.files] == [uids(p) for p in first.files]


# Helpers reading the SR's content tree.


def _items(sr: pydicom.Dataset) -> list[pydicom.Dataset]:
    found = []

    def walk(sequence: pydicom.Sequence) -> None:
        for item in sequence:
            found.append(item)
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(sr.ContentSequence)
    return found


def _finding(sr: pydicom.Dataset) -> str:
    return next(
        str(item.ConceptCodeSequence[0].CodeValue)
        for item in _items(sr)
        if item.ValueType == "CODE" and item.ConceptNameCodeSequence[0].CodeValue == FINDING.value
    )


def _measurement(sr: pydicom.Dataset, code: str) -> float:
    return next(
        float(item.MeasuredValueSequence[0].NumericValue)
        for item in _items(sr)
        if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeValue == code
    )
