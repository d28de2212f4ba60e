"""How well a classifier's scores separate positives from negatives: ROC AUC with a
bootstrap interval, sensitivity and specificity at a threshold, and the threshold that
reaches a sensitivity.

Training (:mod:`inference.training.cxr`) and a hospital's evaluation
(:mod:`inference.evaluation`) share these functions, so a figure means the same in the
model card and in ``pacs model evaluate``. Labels are 1 (positive) and 0 (negative); a
case is flagged when its score is at or above the threshold, as in the inference service.
Pure functions on NumPy arrays.
"""

import math
from dataclasses import dataclass

import numpy as np

BOOTSTRAP = 2000
"""Resamples for the interval of the ROC AUC."""
BOOTSTRAP_SEED = 20261130
"""Fixed, so that the same cases give the same interval."""


@dataclass(frozen=True, slots=True)
class Confusion:
    """The counts at one threshold (flagged: score >= threshold)."""

    threshold: float
    true_positives: int
    false_negatives: int
    true_negatives: int
    false_positives: int

    @property
    def positives(self) -> int:
        return self.true_positives + self.false_negatives

    @property
    def negatives(self) -> int:
        return self.true_negatives + self.false_positives

    @property
    def sensitivity(self) -> float | None:
        """Share of the positives flagged; None without positives."""
        return self.true_positives / self.positives if self.positives else None

    @property
    def specificity(self) -> float | None:
        """Share of the negatives not flagged; None without negatives."""
        return self.true_negatives / self.negatives if self.negatives else None


def _checked(labels: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, values = np.asarray(labels), np.asarray(values, dtype=np.float64)
    if labels.shape != values.shape or labels.ndim != 1:
        raise ValueError(f"{labels.shape} labels for {values.shape} scores: one of each per case")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise ValueError("labels are 1 (positive) or 0 (negative)")
    if not np.isfinite(values).all():
        raise ValueError("a score is not a finite number")
    return labels.astype(np.int64), values


def roc_auc(labels: np.ndarray, values: np.ndarray) -> float:
    """The probability that a positive scores above a negative (ties count half): the
    Mann-Whitney statistic, from average ranks. NaN without both classes."""
    labels, values = _checked(labels, values)
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2)[inverse]
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_auc(
    labels: np.ndarray,
    values: np.ndarray,
    seed: int = BOOTSTRAP_SEED,
    samples: int = BOOTSTRAP,
) -> tuple[float, float]:
    """The 95 % percentile interval of the ROC AUC over resampled cases.

    Resamples with one class only are left out; NaN, NaN if every one was.

    Raises:
        ValueError: the cases are not both positive and negative.
    """
    labels, values = _checked(labels, values)
    if labels.size == 0 or labels.min() == labels.max():
        raise ValueError("an interval of the ROC AUC needs positive and negative cases")
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(samples):
        pick = rng.integers(0, len(labels), len(labels))
        if labels[pick].min() == labels[pick].max():
            continue
        aucs.append(roc_auc(labels[pick], values[pick]))
    if not aucs:
        return float("nan"), float("nan")
    low, high = np.percentile(aucs, [2.5, 97.5])
    return float(low), float(high)


def confusion(labels: np.ndarray, values: np.ndarray, threshold: float) -> Confusion:
    """The counts of flagged and missed positives and negatives at `threshold`."""
    labels, values = _checked(labels, values)
    flagged = values >= threshold
    positive = labels == 1
    return Confusion(
        threshold=float(threshold),
        true_positives=int((flagged & positive).sum()),
        false_negatives=int((~flagged & positive).sum()),
        true_negatives=int((~flagged & ~positive).sum()),
        false_positives=int((flagged & ~positive).sum()),
    )


def rates(labels: np.ndarray, values: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity and specificity at `threshold` (0 for a class with no cases)."""
    counts = confusion(labels, values, threshold)
    return {
        "sensitivity": counts.sensitivity or 0.0,
        "specificity": counts.specificity or 0.0,
    }


def threshold_for(labels: np.ndarray, values: np.ndarray, sensitivity: float) -> float:
    """The highest threshold whose sensitivity (score >= threshold) is at least
    `sensitivity`: the score of the k-th highest positive, k the fewest positives that
    make up that share. A threshold that ties several positives flags them all.

    Raises:
        ValueError: no positive case, or a sensitivity outside (0, 1].
    """
    labels, values = _checked(labels, values)
    if not 0.0 < sensitivity <= 1.0:
        raise ValueError(f"a sensitivity is a share in (0, 1], not {sensitivity}")
    positives = np.sort(values[labels == 1])[::-1]
    if positives.size == 0:
        raise ValueError("no positive case: no threshold reaches a sensitivity")
    # The tolerance keeps 0.95 * 20 at 19 cases in floating point, not 20.
    needed = max(1, math.ceil(sensitivity * positives.size - 1e-9))
    return float(positives[needed - 1])


def operating_point(labels: np.ndarray, values: np.ndarray, sensitivity: float) -> Confusion:
    """The counts at :func:`threshold_for`: what reaching `sensitivity` costs."""
    return confusion(labels, values, threshold_for(labels, values, sensitivity))
