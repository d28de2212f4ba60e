"""Evaluating a classifier over a hospital's labelled cases: the metrics on cases worked out
by hand, the labels file, finding the cases, and scores identical to the archive's."""

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from inference.bundles import LoadedModel, load, read_info
from inference.cases import find_cases, read_labels
from inference.config import SHIPPED_MODELS
from inference.errors import EvaluationError, LabelsError
from inference.evaluation import Evaluation, check_classifier, evaluate
from inference.metrics import (
    bootstrap_auc,
    confusion,
    operating_point,
    rates,
    roc_auc,
    threshold_for,
)
from inference.routing import read
from tests.inference.calibration_cases import (
    EXPECTED,
    GOLDEN,
    build,
    golden_pixels,
    label_of,
    write_cr,
)

NAME = "cxr-pneumonia"
BUNDLE = SHIPPED_MODELS / NAME
RULE = read(SHIPPED_MODELS / "routing.toml").rule(NAME, None)


# -- metrics ----------------------------------------------------------------------------


def test_roc_auc_of_four_cases_by_hand() -> None:
    # positives 0.9 and 0.4, negatives 0.6 and 0.1: 3 of the 4 pairs in order
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.6, 0.1])) == 0.75
    # a tie between a positive and a negative counts half
    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.8, 0.1])) == 0.875


def test_roc_auc_without_both_classes_is_nan_and_the_interval_refuses() -> None:
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))
    assert np.isnan(roc_auc(np.array([], dtype=int), np.array([])))
    with pytest.raises(ValueError, match="positive and negative"):
        bootstrap_auc(np.array([0, 0, 0]), np.array([0.1, 0.2, 0.3]))


def test_bad_inputs_are_refused_with_a_sentence() -> None:
    with pytest.raises(ValueError, match="one of each per case"):
        roc_auc(np.array([1, 0]), np.array([0.1]))
    with pytest.raises(ValueError, match="1 \\(positive\\) or 0"):
        confusion(np.array([2, 0]), np.array([0.1, 0.2]), 0.5)
    with pytest.raises(ValueError, match="finite"):
        roc_auc(np.array([1, 0]), np.array([np.nan, 0.2]))


def test_the_bootstrap_interval_holds_the_auc_and_is_the_same_every_run() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 80)
    values = rng.random(80) + labels * 0.4
    low, high = bootstrap_auc(labels, values)
    assert low < roc_auc(labels, values) < high
    assert bootstrap_auc(labels, values) == (low, high)


def test_confusion_counts_a_score_at_the_threshold_as_flagged() -> None:
    counts = confusion(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.6, 0.1]), 0.6)
    assert (counts.true_positives, counts.false_negatives) == (1, 1)
    assert (counts.true_negatives, counts.false_positives) == (1, 1)
    assert (counts.sensitivity, counts.specificity) == (0.5, 0.5)
    empty = confusion(np.array([], dtype=int), np.array([]), 0.5)
    assert (empty.sensitivity, empty.specificity) == (None, None)
    assert rates(np.array([0, 0]), np.array([0.1, 0.9]), 0.5) == {
        "sensitivity": 0.0,
        "specificity": 0.5,
    }


def test_the_threshold_for_a_sensitivity_is_the_highest_that_reaches_it() -> None:
    positives = np.arange(1, 21) / 100  # 0.01 .. 0.20
    labels = np.array([1] * 20 + [0, 0])
    values = np.concatenate([positives, [0.015, 0.5]])
    # 0.95 of 20 is 19 positives: the 19th highest, 0.02 (0.95 * 20 is not rounded up to 20)
    assert threshold_for(labels, values, 0.95) == 0.02
    assert threshold_for(labels, values, 1.0) == 0.01
    assert threshold_for(labels, values, 0.5) == 0.11
    point = operating_point(labels, values, 0.95)
    assert (point.true_positives, point.positives) == (19, 20)
    assert (point.true_negatives, point.negatives) == (1, 2)  # 0.015 is below, 0.5 above


def test_tied_positives_at_the_threshold_are_all_flagged() -> None:
    labels, values = np.array([1, 1, 1, 1, 0]), np.array([0.7, 0.7, 0.7, 0.2, 0.7])
    point = operating_point(labels, values, 0.5)
    assert point.threshold == 0.7
    assert point.sensitivity == 0.75
    assert point.specificity == 0.0


def test_no_threshold_without_positives_or_with_an_impossible_sensitivity() -> None:
    with pytest.raises(ValueError, match="no positive case"):
        threshold_for(np.array([0, 0]), np.array([0.1, 0.2]), 0.95)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        threshold_for(np.array([1, 0]), np.array([0.1, 0.2]), 1.5)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        threshold_for(np.array([1, 0]), np.array([0.1, 0.2]), 0.0)


# -- labels -----------------------------------------------------------------------------


def test_labels_accept_words_a_bom_extra_columns_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "\ufeffCase , Label,reader\na.jpeg,1,x\n\nb.png,negative,y\nc\\d.dcm, YES ,z\n1.2.3,no,\n",
        encoding="utf-8",
    )
    assert [(row.row, row.case, row.label) for row in read_labels(path)] == [
        (2, "a.jpeg", 1),
        (4, "b.png", 0),
        (5, "c/d.dcm", 1),
        (6, "1.2.3", 0),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,diagnosis\na.jpeg,1\n", "header with the columns case,label"),
        ("", "found nothing"),
        ("case,label\na.jpeg,maybe\n", "line 2: label 'maybe' is not 1/0"),
        ("case,label\n,1\n", "line 2: the case is empty"),
        ("case,label\na.jpeg\n", "line 2: expected case,label"),
        ("case,label\na.jpeg,1\nb.jpeg,0\na.jpeg,0\n", "line 4: a.jpeg is labelled again"),
    ],
)
def test_a_bad_labels_file_says_what_and_where(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(LabelsError, match=message):
        read_labels(path)


def test_labels_that_are_not_text(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(b"case,label\n\xff\xfe\x00,1\n")
    with pytest.raises(LabelsError, match="not UTF-8"):
        read_labels(path)


# -- cases and scores -------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return load(BUNDLE)


def _labels(path: Path, rows: list[str]) -> Path:
    path.write_text("case,label\n" + "\n".join(rows) + "\n")
    return path


def _evaluate(model: LoadedModel, folder: Path, labels: Path, **kwargs: Any) -> Evaluation:
    found = find_cases(folder, read_labels(labels), RULE, NAME)
    return evaluate(
        model.network,
        found.found,
        rule=RULE,
        model=NAME,
        threshold=kwargs.pop("threshold", 0.5),
        **kwargs,
    )


def test_jpeg_and_dicom_cases_get_the_archives_pinned_scores(
    model: LoadedModel, tmp_path: Path
) -> None:
    """The golden JPEGs and the same pixels wrapped as CRs (MONOCHROME1, stored inverted)
    score what tests/data/cxr-golden/scores.json pins."""
    rows = []
    for name in sorted(EXPECTED):
        (tmp_path / name).write_bytes((GOLDEN / name).read_bytes())
        write_cr(golden_pixels(name), tmp_path / f"{name}.dcm", monochrome1=True)
        rows += [f"{name},{label_of(name)}", f"{name}.dcm,{label_of(name)}"]
    labels = _labels(tmp_path / "labels.csv", rows)
    result = _evaluate(model, tmp_path, labels, threshold=model.info.threshold)
    assert result.unreadable == []
    scores = {case.case: case.score for case in result.scored}
    for name, expected in EXPECTED.items():
        assert scores[name] == pytest.approx(expected["score"], abs=1e-4)
        assert scores[f"{name}.dcm"] == scores[name]
    assert (result.positives, result.negatives) == (6, 6)
    assert result.auc == 1.0
    # at the bundle's threshold one golden pneumonia (0.659) is missed in both forms
    assert result.in_force.true_positives == 4
    assert result.in_force.specificity == 1.0
    assert result.reaching is not None
    assert result.reaching.threshold == pytest.approx(0.65851, abs=1e-4)
    assert result.reaching.sensitivity == 1.0


def test_a_study_uid_label_scores_the_image_the_routing_rule_would_pick(
    model: LoadedModel, tmp_path: Path
) -> None:
    """Series in number order, the first that the model's routing rule accepts (not the
    CT, not the lateral), and its first image by instance number."""
    name = "pneumonia-person1006_bacteria_2937.jpeg"
    folder = tmp_path / "cases"
    pa = write_cr(golden_pixels(name), folder / "s" / "d.dcm", series_number=3, instance_number=1)
    uid, black = pa.StudyInstanceUID, np.zeros((224, 224), np.uint8)
    write_cr(
        black,
        folder / "s" / "a.dcm",
        study_uid=uid,
        series_uid=pa.SeriesInstanceUID,
        series_number=3,
        instance_number=2,
    )
    write_cr(
        black, folder / "s" / "b.dcm", study_uid=uid, modality="CT", body_part="", series_number=1
    )
    write_cr(black, folder / "s" / "c.dcm", study_uid=uid, description="Chest LAT", series_number=2)
    head = write_cr(golden_pixels(name), folder / "h" / "a.dcm", body_part="HEAD")
    (folder / "notes.txt").write_text("not an image\n")
    (tmp_path / "outside.png").write_bytes((GOLDEN / name).read_bytes())
    labels = _labels(
        tmp_path / "labels.csv",
        [
            f"{uid},1",
            f"{head.StudyInstanceUID},0",
            "1.2.3.4,1",
            "missing.png,0",
            "../outside.png,1",
        ],
    )
    found = find_cases(folder, read_labels(labels), RULE, NAME)
    assert [(u.row, u.reason) for u in found.unmatched] == [
        (4, "no such file, and no DICOM file of a study with this UID"),
        (5, "no such file in the cases folder"),
        (6, "outside the cases folder"),
    ]
    result = evaluate(model.network, found.found, rule=RULE, model=NAME, threshold=0.5)
    [scored] = result.scored
    assert scored.case == uid
    assert scored.score == pytest.approx(EXPECTED[name]["score"], abs=1e-4)
    assert [c.case for c in result.unreadable] == [head.StudyInstanceUID]
    assert result.unreadable[0].reason.startswith("no series for cxr-pneumonia: series 1 (CR HEAD)")
    assert "body part HEAD is not CHEST" in result.unreadable[0].reason


def test_unreadable_cases_are_listed_with_their_reason_not_fatal(
    model: LoadedModel, tmp_path: Path
) -> None:
    (tmp_path / "text.dcm").write_text("not DICOM\n")
    no_pixels = write_cr(golden_pixels("normal-IM-0125-0001.jpeg"), tmp_path / "empty.dcm")
    del no_pixels.PixelData
    no_pixels.save_as(tmp_path / "empty.dcm", enforce_file_format=True)
    (tmp_path / "broken.jpeg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    Image.fromarray(np.full((224, 224), 40000, np.uint16)).save(tmp_path / "deep.png")
    write_cr(golden_pixels("normal-IM-0125-0001.jpeg"), tmp_path / "head.dcm", body_part="SKULL")
    name = "normal-IM-0135-0001.jpeg"
    (tmp_path / name).write_bytes((GOLDEN / name).read_bytes())
    labels = _labels(
        tmp_path / "labels.csv",
        ["text.dcm,1", "empty.dcm,1", "broken.jpeg,1", "deep.png,0", "head.dcm,0", f"{name},0"],
    )
    result = _evaluate(model, tmp_path, labels)
    reasons = {case.case: case.reason for case in result.unreadable}
    assert reasons["text.dcm"] == "neither DICOM nor a PNG/JPEG image"
    assert reasons["empty.dcm"].startswith("the image cannot be read: ")
    assert reasons["broken.jpeg"].startswith("the image cannot be read: ")
    assert "is not 8-bit" in reasons["deep.png"]
    assert reasons["head.dcm"].startswith("not for cxr-pneumonia: series 1 (CR SKULL): body part")
    assert [case.case for case in result.scored] == [name]
    assert result.auc is None
    assert result.auc_interval is None
    assert result.reaching is None  # no positive case scored
    assert result.in_force.specificity == 1.0


def test_the_case_folder_for_calibration(model: LoadedModel, tmp_path: Path) -> None:
    cases, labels = build(tmp_path)
    progress: list[int] = []
    found = find_cases(cases, read_labels(labels), RULE, NAME)
    assert [u.case for u in found.unmatched] == ["jpeg/not-there.jpeg"]
    result = _evaluate(model, cases, labels, progress=progress.append)
    assert len(progress) == 25
    assert [c.case for c in result.unreadable] == ["dicom/broken.dcm"]
    assert (result.positives, result.negatives) == (12, 12)
    assert result.auc is not None
    assert result.auc > 0.9


def test_only_image_classifiers_are_evaluated() -> None:
    info = read_info(BUNDLE)
    check_classifier(info)
    check_classifier(
        dataclasses.replace(info, metadata={**info.metadata, "runner": "image-classifier"})
    )
    segmenter = dataclasses.replace(info, metadata={**info.metadata, "runner": "ct-segmenter"})
    with pytest.raises(EvaluationError, match="'ct-segmenter' model"):
        check_classifier(segmenter)
