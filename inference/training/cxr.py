"""Train the default chest X-ray triage model (pneumonia pattern) on the Kermany images.

    python -m inference.training.cxr --data ../shared/data/kermany-cxr-train-224.tar \\
        --out models/cxr-pneumonia

Reproducible: fixed seeds, one thread order, the split by patient written next to the
weights. Patients (not images) are split 70 / 15 / 15 into training, validation and test;
the decision threshold is the highest one whose validation sensitivity is at least 0.95;
the test set is touched once, at the end, for the model card's figures (ROC AUC with a
95 % bootstrap interval, sensitivity and specificity at the threshold). About 15 minutes
on two CPU cores.
"""

import argparse
import hashlib
import io
import json
import re
import tarfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import numpy as np
import torch
from PIL import Image
from torch.nn import functional

from inference.cxr import INPUT_SIZE, SOURCE_SIZE, model_input, network
from inference.metrics import bootstrap_auc, rates, roc_auc, threshold_for

SEED = 20261130
SPLIT = (0.70, 0.15, 0.15)
TARGET_SENSITIVITY = 0.95


@dataclass(frozen=True)
class Images:
    pixels: np.ndarray  # (N, 224, 224) uint8
    labels: np.ndarray  # (N,) 1 = pneumonia
    patients: list[str]
    names: list[str]


def patient_of(name: str) -> str:
    """`person9_bacteria_41.jpeg` → person9; `IM-0115-0001.jpeg` → IM-0115."""
    stem = Path(name).name
    if match := re.match(r"(person\d+)_", stem):
        return match.group(1)
    if match := re.match(r"(IM-\d+)", stem):
        return match.group(1)
    if match := re.match(r"(NORMAL2-IM-\d+)", stem):
        return match.group(1)
    return stem.rsplit("-", 1)[0]


def load(tar_path: Path) -> Images:
    pixels, labels, patients, names = [], [], [], []
    with tarfile.open(tar_path) as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            if not member.isfile() or not member.name.lower().endswith((".jpeg", ".jpg")):
                continue
            label = 1 if "/PNEUMONIA/" in member.name else 0
            data = archive.extractfile(member)
            assert data is not None
            image = Image.open(io.BytesIO(data.read())).convert("L")
            if image.size != (SOURCE_SIZE, SOURCE_SIZE):
                image = image.resize((SOURCE_SIZE, SOURCE_SIZE), Image.Resampling.BILINEAR)
            pixels.append(np.asarray(image, dtype=np.uint8))
            labels.append(label)
            patients.append(("P:" if label else "N:") + patient_of(member.name))
            names.append(member.name)
    return Images(np.stack(pixels), np.array(labels), patients, names)


def split(patients: list[str], seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of training, validation and test images, no patient in two of them."""
    unique = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(unique))
    cut1 = int(len(unique) * SPLIT[0])
    cut2 = int(len(unique) * (SPLIT[0] + SPLIT[1]))
    group = {}
    for rank, index in enumerate(order):
        group[unique[index]] = 0 if rank < cut1 else 1 if rank < cut2 else 2
    assigned = np.array([group[p] for p in patients])
    return tuple(np.flatnonzero(assigned == k) for k in range(3))  # type: ignore[return-value]


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small rotations, zooms, shifts and contrast changes, the whole batch at once."""
    n = batch.shape[0]
    angle = (torch.rand(n, generator=generator) - 0.5) * (2 * np.pi * 10 / 360)
    scale = 1 + (torch.rand(n, generator=generator) - 0.5) * 0.2
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * 0.12
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = functional.affine_grid(theta, list(batch.shape), align_corners=False)
    moved = functional.grid_sample(batch, grid, padding_mode="border", align_corners=False)
    gamma = torch.exp((torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.4)
    return moved.clamp(0, 1) ** gamma


def scores(model: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(inputs), 256):
            out.append(torch.sigmoid(model(inputs[start : start + 256])).squeeze(1))
    return torch.cat(out).numpy()


def train(images: Images, *, epochs: int, batch_size: int = 32) -> dict[str, object]:
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    train_idx, val_idx, test_idx = split(images.patients)
    inputs = model_input(images.pixels)
    labels = torch.from_numpy(images.labels).float()
    model = network()
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(train_idx) / batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=steps)
    positives = float(labels[train_idx].sum())
    weight = torch.tensor([(len(train_idx) - positives) / positives])
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=weight)
    best_state, best_auc = None, -1.0
    started = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(train_idx)[torch.randperm(len(train_idx), generator=generator)]
        total = 0.0
        for start in range(0, len(order), batch_size):
            pick = order[start : start + batch_size]
            batch = augment(inputs[pick], generator)
            optimiser.zero_grad()
            loss = loss_fn(model(batch).squeeze(1), labels[pick])
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss) * len(pick)
        val_auc = roc_auc(images.labels[val_idx], scores(model, inputs[val_idx]))
        if val_auc > best_auc:
            best_auc = val_auc
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        print(
            f"epoch {epoch + 1}/{epochs}: loss {total / len(order):.4f}, "
            f"validation AUC {val_auc:.4f} ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    assert best_state is not None
    model.load_state_dict(best_state)
    val_scores = scores(model, inputs[val_idx])
    threshold = threshold_for(images.labels[val_idx], val_scores, TARGET_SENSITIVITY)
    test_scores = scores(model, inputs[test_idx])
    test_labels = images.labels[test_idx]
    auc = roc_auc(test_labels, test_scores)
    return {
        "model": model,
        "threshold": threshold,
        "validation": {"auc": best_auc, **rates(images.labels[val_idx], val_scores, threshold)},
        "test": {
            "auc": auc,
            "auc_95ci": bootstrap_auc(test_labels, test_scores),
            **rates(test_labels, test_scores, threshold),
            "images": len(test_idx),
            "pneumonia": int(test_labels.sum()),
            "patients": len({images.patients[i] for i in test_idx}),
        },
        "split": {
            "train": sorted({images.patients[i] for i in train_idx}),
            "validation": sorted({images.patients[i] for i in val_idx}),
            "test": sorted({images.patients[i] for i in test_idx}),
        },
        "seconds": time.perf_counter() - started,
        "epochs": epochs,
    }


def write_bundle(out: Path, result: dict[str, object], data: Path) -> None:
    (out / "models").mkdir(parents=True, exist_ok=True)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    model = result["model"]
    assert isinstance(model, torch.nn.Module)
    weights = out / "models" / "model.pt"
    torch.save(model.state_dict(), weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    metadata = {
        "name": "cxr-pneumonia",
        "version": "1.0.0",
        "changelog": {"1.0.0": "first model, trained by inference/training/cxr.py"},
        "monai_version": __import__("monai").__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "task": "Pneumonia-pattern triage on chest X-rays",
        "intended_use": (
            "Triage aid: moves chest X-rays with a pneumonia pattern up the reading list. "
            "Not a diagnosis. Trained on paediatric images (1 to 5 years, one centre); "
            "not validated on adults; calibrate the threshold per hospital."
        ),
        "data_source": "Kermany, Zhang, Goldbaum, Mendeley Data v2, doi:10.17632/rscbjbr9sj.2 "
        "(CC BY 4.0)",
        "weights_sha256": digest,
        "threshold": result["threshold"],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "greyscale",
                    "num_channels": 1,
                    "spatial_shape": [INPUT_SIZE, INPUT_SIZE],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "note": "8-bit windowed image squashed to 224 x 224, then "
                    "inference.cxr.model_input",
                }
            },
            "outputs": {
                "pred": {
                    "type": "probabilities",
                    "format": "logit",
                    "num_channels": 1,
                    "channel_def": {"0": "pneumonia pattern"},
                }
            },
        },
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "training": {"epochs": result["epochs"], "seconds": round(cast(float, result["seconds"]))},
        "validation": result["validation"],
        "test": result["test"],
    }
    (out / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    inference_config = {
        "network_def": {
            "_target_": "monai.networks.nets.DenseNet",
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 1,
            "init_features": 16,
            "growth_rate": 16,
            "block_config": [4, 8, 6],
        },
        "weights": "$@bundle_root + '/models/model.pt'",
        "threshold": result["threshold"],
    }
    (out / "configs" / "inference.json").write_text(json.dumps(inference_config, indent=2) + "\n")
    (out / "split.json").write_text(json.dumps(result["split"], indent=1) + "\n")
    print(f"weights {weights} sha256 {digest}; data {data}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, default=Path("../shared/data/kermany-cxr-train-224.tar")
    )
    parser.add_argument("--out", type=Path, default=Path("models/cxr-pneumonia"))
    parser.add_argument("--epochs", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    images = load(args.data)
    print(f"{len(images.labels)} images of {len(set(images.patients))} patients", flush=True)
    result = train(images, epochs=args.epochs)
    write_bundle(args.out, result, args.data)
    print(json.dumps({k: result[k] for k in ("threshold", "validation", "test")}, indent=2))


if __name__ == "__main__":
    main()
