"""A drop-in model bundle that behaves as told: answers, sleeps first, hangs, or kills its
own process. Made by the tests to prove that one bad model run fails one job only, and
that a site's own bundle runs without a code change."""

import json
import os
import signal
import time
from pathlib import Path

import torch
from torch import nn

from inference.bundles import sha256_of


class Misbehaving(nn.Module):
    def __init__(self, mode: str = "ok", seconds: float = 0.0) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([3.0]))
        self.mode = mode
        self.seconds = seconds

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.mode == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.mode == "hang":
            while True:
                time.sleep(1)
        time.sleep(self.seconds)
        return self.bias.expand(batch.shape[0], 1)


def make_bundle(
    root: Path, name: str, *, mode: str = "ok", seconds: float = 0.0, route_cr: bool = True
) -> Path:
    """A bundle `root`/`name` (score sigmoid(3) = 0.95, threshold 0.5), routed to chest CRs."""
    folder = root / name
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    weights = folder / "models" / "model.pt"
    torch.save(Misbehaving().state_dict(), weights)
    network = {
        "_target_": "tests.inference.misbehaving.Misbehaving",
        "mode": mode,
        "seconds": seconds,
    }
    (folder / "configs" / "inference.json").write_text(json.dumps({"network_def": network}))
    metadata = {
        "name": name,
        "version": "0.1.0",
        "runner": "image-classifier",
        "finding": "test finding",
        "severity": "critical",
        "intended_use": "tests only",
        "weights_sha256": sha256_of(weights),
        "threshold": 0.5,
    }
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata))
    if route_cr:
        with (root / "routing.toml").open("a") as rules:
            rules.write(f'[models.{name}]\nmodality = ["CR"]\n')
    return folder
