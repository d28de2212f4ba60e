"""Models as MONAI bundles, pinned by the SHA-256 of their weights.

A bundle is a folder ``models/<name>/`` holding ``configs/metadata.json`` (name, version,
intended use, inputs and outputs, the weights' SHA-256, the decision threshold),
``configs/inference.json`` (the network, as MONAI's config syntax) and
``models/model.pt`` (the weights). :func:`load` refuses weights whose hash is not the one
recorded: a model is what was validated, or it does not run.

An ensemble bundle (several networks of one architecture, such as ``blast-ct``) records a
``"weights"`` object instead of ``weights_sha256``: each weights file's path, relative to
the bundle, and its SHA-256, in the ensemble's order. Every file is checked
(:func:`check_weights`), :func:`load_ensemble` loads the first `count`, and the bundle's
``weights_sha256`` is then a combined hash (:func:`combined_sha256`).
"""

import hashlib
import json
from dataclasses import dataclass, field
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
    weights: dict[str, str] = field(default_factory=dict)
    """Each weights file (a path relative to the bundle) and its SHA-256, in order."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    info: BundleInfo
    network: torch.nn.Module


def read_info(path: Path) -> BundleInfo:
    """A bundle's metadata, without loading it; raises ModelRefused if it is incomplete."""
    try:
        metadata = json.loads((path / "configs" / "metadata.json").read_text())
        if "weights" in metadata:
            weights = {str(file): str(sha) for file, sha in dict(metadata["weights"]).items()}
            if not weights or any(Path(f).is_absolute() or ".." in Path(f).parts for f in weights):
                raise ValueError("'weights' must name files inside the bundle")
            sha256 = combined_sha256(weights)
        else:
            sha256 = str(metadata["weights_sha256"])
            weights = {WEIGHTS.as_posix(): sha256}
        return BundleInfo(
            name=str(metadata["name"]),
            version=str(metadata["version"]),
            path=path,
            weights_sha256=sha256,
            threshold=float(metadata["threshold"]),
            intended_use=str(metadata.get("intended_use", "")),
            metadata=metadata,
            weights=weights,
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


def combined_sha256(weights: dict[str, str]) -> str:
    """One hash for an ensemble: the SHA-256 of its ``"<path> <sha256>\\n"`` lines, sorted by
    path (the same files with the same contents give the same hash, in any order)."""
    lines = "".join(f"{file} {sha}\n" for file, sha in sorted(weights.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def check_weights(info: BundleInfo) -> Path:
    """The bundle's (first) weights file, once every weights file of the bundle has the
    SHA-256 recorded; else ModelRefused naming the file."""
    for file, expected in info.weights.items():
        weights = info.path / file
        if not weights.is_file():
            raise ModelRefused(f"{info.name}: no weights at {weights}")
        actual = sha256_of(weights)
        if actual != expected:
            raise ModelRefused(
                f"{info.name} {info.version}: the SHA-256 of {file} is {actual}, not the "
                f"{expected} its metadata records; refusing to load them"
            )
    return info.path / next(iter(info.weights))


def load(path: Path) -> LoadedModel:
    """The bundle's network with its weights (an ensemble's first), on the CPU, in eval mode.

    Raises:
        ModelRefused: metadata missing, weights missing or not the ones recorded, or weights
            that do not fit the network exactly.
    """
    info = read_info(path)
    weights = check_weights(info)
    return LoadedModel(info, _network(info, _parser(path), weights))


def load_ensemble(path: Path, count: int | None = None) -> tuple[BundleInfo, list[torch.nn.Module]]:
    """The first `count` networks (all by default) of an ensemble bundle, in the order its
    metadata lists their weights, on the CPU, in evaluation mode. Every weights file of
    the bundle is checked first, as by :func:`check_weights`.

    Raises:
        ModelRefused: as :func:`load`, naming the file; or fewer networks than `count`.
    """
    info = read_info(path)
    check_weights(info)
    files = list(info.weights)
    if count is not None and not 1 <= count <= len(files):
        raise ModelRefused(f"{info.name}: asked for {count} networks, the bundle has {len(files)}")
    parser = _parser(path)
    networks = [_network(info, parser, path / file) for file in files[:count]]
    return info, networks


def _parser(path: Path) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(path / "configs" / "inference.json"))
    parser["bundle_root"] = str(path)
    return parser


def _network(info: BundleInfo, parser: ConfigParser, weights: Path) -> torch.nn.Module:
    network = parser.get_parsed_content("network_def", lazy=False)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelRefused(
            f"{info.name}: the weights in {weights.name} do not fit the network: {exc}"
        ) from None
    network.eval()
    return network  # type: ignore[no-any-return]
