"""A classifier model over a hospital's own labelled cases: how well it separates them, what
the threshold in force gives, and which threshold reaches a target sensitivity.

A threshold chosen on the training population does not carry over to another (the chest
X-ray model was trained on children), so a hospital scores its own cases and calibrates
(``pacs model evaluate``). Cases are DICOM files and 8-bit PNG/JPEG images under one
folder; a CSV names each case (a file under the folder, or a StudyInstanceUID) and its
label. Each case is scored exactly as the archive scores it: a DICOM case is what the
model's routing rule would send it (:mod:`inference.routing`; a study's first image of the
series the rule picks), prepared by :func:`inference.cxr.readable_image`; an image file is
read as the training images were (:mod:`inference.cases`); then scored by
:func:`inference.cxr.score`, one image at a time, as :mod:`inference.runner` does.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from inference.bundles import BundleInfo
from inference.cases import Case, case_pixels
from inference.cxr import score
from inference.errors import EvaluationError
from inference.metrics import Confusion, bootstrap_auc, confusion, operating_point, roc_auc
from inference.routing import Rule
from inference.runner import CLASSIFIER


@dataclass(frozen=True, slots=True)
class Scored:
    case: str
    label: int
    score: float


@dataclass(frozen=True, slots=True)
class Unreadable:
    case: str
    label: int
    reason: str


@dataclass(frozen=True, slots=True)
class Evaluation:
    scored: list[Scored]
    unreadable: list[Unreadable]
    auc: float | None
    """ROC AUC; None without both positive and negative cases."""
    auc_interval: tuple[float, float] | None
    """Its 95 % bootstrap interval."""
    in_force: Confusion
    """The counts at the threshold in force."""
    target_sensitivity: float
    reaching: Confusion | None
    """The counts at the highest threshold reaching the target; None without positives."""

    @property
    def positives(self) -> int:
        return sum(1 for case in self.scored if case.label == 1)

    @property
    def negatives(self) -> int:
        return sum(1 for case in self.scored if case.label == 0)


def check_classifier(info: BundleInfo) -> None:
    """Raise EvaluationError unless `info` is an image classifier (the chest model's kind)."""
    runner = info.metadata.get("runner", CLASSIFIER)
    if runner != CLASSIFIER:
        raise EvaluationError(
            f"{info.name} is a {runner!r} model; only {CLASSIFIER} models are evaluated here"
        )


def evaluate(
    network: torch.nn.Module,
    cases: list[Case],
    *,
    rule: Rule | None,
    model: str,
    threshold: float,
    target_sensitivity: float = 0.95,
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """Score every case (one that cannot be read is listed with the reason, not fatal), then
    the figures over those scored.

    Args:
        network: the loaded bundle's network, in evaluation mode.
        cases: from :func:`find_cases`.
        rule: the model's routing rule: a DICOM case it would not send to the model is
            listed as unreadable with the reason (None: any series).
        model: the model's name, for those reasons.
        threshold: the threshold in force, whose sensitivity and specificity are reported.
        target_sensitivity: the share of positives the suggested threshold must flag.
        progress: called with 1 after each case.
    """
    if not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"a target sensitivity is a share in (0, 1], not {target_sensitivity}")
    scored: list[Scored] = []
    unreadable: list[Unreadable] = []
    for case in cases:
        try:
            if case.path is None:
                raise EvaluationError(case.problem or "no file")
            scored.append(
                Scored(case.name, case.label, score(network, case_pixels(case.path, rule, model)))
            )
        except EvaluationError as exc:
            unreadable.append(Unreadable(case.name, case.label, exc.reason))
        except Exception as exc:  # a file that breaks a decoder is one unreadable case
            unreadable.append(Unreadable(case.name, case.label, f"{type(exc).__name__}: {exc}"))
        if progress is not None:
            progress(1)
    labels = np.array([case.label for case in scored], dtype=np.int64)
    values = np.array([case.score for case in scored], dtype=np.float64)
    both = 0 < int(labels.sum()) < len(labels)
    return Evaluation(
        scored=scored,
        unreadable=unreadable,
        auc=roc_auc(labels, values) if both else None,
        auc_interval=bootstrap_auc(labels, values) if both else None,
        in_force=confusion(labels, values, threshold),
        target_sensitivity=target_sensitivity,
        reaching=operating_point(labels, values, target_sensitivity) if labels.any() else None,
    )


def evidence(result: Evaluation, *, labels_path: Path, labels_sha256: str, cases: Path) -> str:
    """One line saying what a threshold set from `result` rests on, for the audit trail."""
    if result.reaching is None:
        raise ValueError("no threshold to set: no positive case")
    interval = (
        f" (95% CI {result.auc_interval[0]:.3f}-{result.auc_interval[1]:.3f})"
        if result.auc_interval
        else ""
    )
    auc = f"{result.auc:.3f}{interval}" if result.auc is not None else "n/a"
    return (
        f"pacs model evaluate: {len(result.scored)} cases ({result.positives} positive, "
        f"{result.negatives} negative), ROC AUC {auc}; target sensitivity "
        f"{result.target_sensitivity:g} -> threshold {result.reaching.threshold:.4f} "
        f"(sensitivity {_share(result.reaching.sensitivity)}, specificity "
        f"{_share(result.reaching.specificity)}); labels {labels_path.name} sha256 "
        f"{labels_sha256}; cases {cases}"
    )


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
