"""Models as MONAI bundles, pinned by the SHA-256 of their weights.

A bundle is a folder ``models/<name>/`` holding ``configs/metadata.json`` (name, version,
intended use, inputs and outputs, the weights' SHA-256, the decision threshold),
``configs/inference.json`` (the network, as MONAI's config syntax) and
``models/model.pt`` (the weights). :func:`load` refuses weights whose hash is not the one
recorded: a model is what was validated, or it does not run.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.bundle.config_parser import ConfigParser

from inference.errors import ModelRefused

WEIGHTS = Path("models") / "model.pt"


@dataclass(frozen=True, slots=True)
class BundleInfo:
    name: str
    version: str
    path: Path
    weights_sha256: str
    threshold: float
    intended_use: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    info: BundleInfo
    network: torch.nn.Module


def read_info(path: Path) -> BundleInfo:
    """A bundle's metadata, without loading it; raises ModelRefused if it is incomplete."""
    try:
        metadata = json.loads((path / "configs" / "metadata.json").read_text())
        return BundleInfo(
            name=str(metadata["name"]),
            version=str(metadata["version"]),
            path=path,
            weights_sha256=str(metadata["weights_sha256"]),
            threshold=float(metadata["threshold"]),
            intended_use=str(metadata.get("intended_use", "")),
            metadata=metadata,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelRefused(f"{path} is not a usable bundle: {exc}") from None


def discover(root: Path) -> list[BundleInfo]:
    """Every bundle under `root` (one folder each)."""
    found = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if (folder / "configs" / "metadata.json").is_file():
            found.append(read_info(folder))
    return found


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_weights(info: BundleInfo) -> Path:
    """The bundle's weights file, if its SHA-256 is the one recorded; else ModelRefused."""
    weights = info.path / WEIGHTS
    if not weights.is_file():
        raise ModelRefused(f"{info.name}: no weights at {weights}")
    actual = sha256_of(weights)
    if actual != info.weights_sha256:
        raise ModelRefused(
            f"{info.name} {info.version}: the weights' SHA-256 is {actual}, not the "
            f"{info.weights_sha256} its metadata records; refusing to load them"
        )
    return weights


def load(path: Path) -> LoadedModel:
    """The bundle's network with its weights, on the CPU, in evaluation mode.

    Raises:
        ModelRefused: metadata missing, weights missing or not the ones recorded, or weights
            that do not fit the network exactly.
    """
    info = read_info(path)
    weights = check_weights(info)
    parser = ConfigParser()
    parser.read_config(str(path / "configs" / "inference.json"))
    parser["bundle_root"] = str(path)
    network = parser.get_parsed_content("network_def")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelRefused(f"{info.name}: the weights do not fit the network: {exc}") from None
    network.eval()
    return LoadedModel(info, network)
