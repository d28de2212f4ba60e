"""The pieces of the chest X-ray training that decide whether its figures can be trusted:
the split by patient, the ROC AUC, the threshold rule, the input preparation."""

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from inference.config import SHIPPED_MODELS
from inference.cxr import INPUT_SIZE, model_input
from inference.training.cxr import load, patient_of, rates, roc_auc, split, threshold_for


def test_patients_are_read_from_the_file_names() -> None:
    assert patient_of("train/PNEUMONIA/person9_bacteria_41.jpeg") == "person9"
    assert patient_of("train/PNEUMONIA/person1000_virus_1681.jpeg") == "person1000"
    assert patient_of("train/NORMAL/IM-0115-0001.jpeg") == "IM-0115"
    assert patient_of("train/NORMAL/NORMAL2-IM-1427-0001.jpeg") == "NORMAL2-IM-1427"


def test_no_patient_is_in_two_sets() -> None:
    patients = [f"P:person{i // 3}" for i in range(900)] + [f"N:IM-{i // 2}" for i in range(400)]
    sets = [{patients[i] for i in part} for part in split(patients)]
    assert all(a.isdisjoint(b) for a, b in itertools.combinations(sets, 2))
    assert sum(len(part) for part in split(patients)) == len(patients)
    assert split(patients)[2].tolist() == split(patients)[2].tolist()  # the same every run


def test_roc_auc_is_the_share_of_correctly_ordered_pairs() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    values = np.round(rng.random(200) + labels * 0.3, 1)  # ties on purpose
    pairs = [
        1.0 if p > n else 0.5 if p == n else 0.0
        for p in values[labels == 1]
        for n in values[labels == 0]
    ]
    assert roc_auc(labels, values) == pytest.approx(np.mean(pairs))


def test_the_threshold_keeps_the_sensitivity_asked_for() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 500)
    values = rng.random(500) + labels * 0.5
    threshold = threshold_for(labels, values, 0.95)
    assert rates(labels, values, threshold)["sensitivity"] >= 0.95
    assert rates(labels, values, threshold + 1e-6)["sensitivity"] < 0.95 + 0.01


def test_model_input_is_the_same_squash_and_scale_for_every_caller() -> None:
    images = np.zeros((2, 224, 224), dtype=np.uint8)
    images[1] = 255
    batch = model_input(images)
    assert tuple(batch.shape) == (2, 1, INPUT_SIZE, INPUT_SIZE)
    assert float(batch[0].max()) == 0.0
    assert float(batch[1].min()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="224"):
        model_input(np.zeros((1, 100, 100), dtype=np.uint8))


SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "kermany-cxr-train-224.tar"


def test_the_shipped_split_is_the_one_the_script_makes_from_the_data() -> None:
    """The model card's test figures come from patients the model never saw: the split
    written beside the weights is recomputed from the data and compared."""
    if not SHARED_DATA.is_file():
        message = f"the training data is not at {SHARED_DATA} (../shared/data)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    images = load(SHARED_DATA)
    assert len(images.labels) == 5216
    _, val_idx, test_idx = split(images.patients)
    shipped = json.loads((SHIPPED_MODELS / "cxr-pneumonia" / "split.json").read_text())
    assert shipped["test"] == sorted({images.patients[i] for i in test_idx})
    assert shipped["validation"] == sorted({images.patients[i] for i in val_idx})
    assert set(shipped["train"]).isdisjoint(shipped["test"])
