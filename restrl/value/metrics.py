"""From a VM's raw output to scores, and the test metrics reported on those scores."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr

METRIC_NAMES = ("loss", "mse", "accuracy", "spearman")


def scores_from_logits(logits: Any, rm_class: str, min_rw: float = -math.inf,
                       max_rw: float = math.inf) -> np.ndarray:
    """Raw VM output (rows x 1, or rows x 2 for transformers_prob) -> scores: the scalar
    classes' output clipped to [min_rw, max_rw], or the prob class's softmax[1]."""
    logits = np.asarray(logits, dtype=np.float64)
    if rm_class == "transformers_prob":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted[:, 1] / shifted.sum(axis=-1)
    return np.clip(logits[:, 0], min_rw, max_rw)


def regression_metrics(predictions: Sequence[float], targets: Sequence[float],
                       test_tol: float) -> dict[str, float]:
    """mse, accuracy (share with |pred - target| < test_tol, strict as in the seed) and
    Spearman rho of the predictions. Spearman is 0.0 where it is undefined (fewer than 2 rows,
    constant predictions/targets)."""
    pred = np.asarray(predictions, dtype=np.float64)
    true = np.asarray(targets, dtype=np.float64)
    if pred.size == 0:
        return {"mse": float("nan"), "accuracy": float("nan"), "spearman": 0.0}
    rho = 0.0
    if pred.size >= 2 and np.ptp(pred) > 0 and np.ptp(true) > 0:
        rho = float(spearmanr(pred, true).statistic)
        rho = rho if math.isfinite(rho) else 0.0
    return {
        "mse": float(np.mean((pred - true) ** 2)),
        "accuracy": float(np.mean(np.abs(pred - true) < test_tol)),
        "spearman": rho,
    }
