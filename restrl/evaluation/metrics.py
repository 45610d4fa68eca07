"""Evaluation metrics over verdicts: unbiased pass@k, average and strict accuracy."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from math import comb
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k) for n samples, c correct."""
    if n < 1 or k < 1:
        raise ValueError(f"need n >= 1 and k >= 1, got n={n}, k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def group_by_problem(rows: Iterable[Mapping[str, Any]]
                     ) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """Rows per problem, keyed by (domain, problem_id): ids repeat across problem sets."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        key = (str(row.get("domain") or ""), str(row["problem_id"]))
        groups.setdefault(key, []).append(row)
    return groups


def pass_at_1(rows: Iterable[Mapping[str, Any]]) -> float:
    """Mean over problems of the share of strict passes among its samples (unbiased pass@1)."""
    groups = group_by_problem(rows)
    if not groups:
        return 0.0
    return sum(sum(bool(r["strict"]) for r in g) / len(g) for g in groups.values()) / len(groups)


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-problem `values` (problems resampled
    with replacement), e.g. the 95% interval of an accuracy over problems."""
    import numpy as np

    if not values:
        return float("nan"), float("nan")
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def sample_metrics(rows: Iterable[Mapping[str, Any]], ks: Sequence[int] = (1,)) -> dict[str, float]:
    """Metrics of plain sampling over verdict rows (reward, strict, problem_id).

    pass@k: mean over problems of the unbiased estimator (strict passes count as correct);
    average_accuracy: mean reward per problem, averaged over problems (partial credit);
    strict_accuracy: share of strict passes per problem, averaged over problems (= pass@1), as
    the original evaluation computes both; pass@k_ci_low/high: its 95% bootstrap interval over
    problems.
    """
    groups = group_by_problem(rows)
    if not groups:
        return {}
    metrics: dict[str, float] = {}
    for k in ks:
        usable = [g for g in groups.values() if len(g) >= k]
        if usable:
            values = [pass_at_k(len(g), sum(bool(r["strict"]) for r in g), k) for g in usable]
            metrics[f"pass@{k}"] = sum(values) / len(values)
            if k > 1:  # pass@1's interval is below, over every problem
                metrics[f"pass@{k}_ci_low"], metrics[f"pass@{k}_ci_high"] = bootstrap_ci(values)
    per_problem = [(sum(float(r["reward"]) for r in g) / len(g),
                    sum(bool(r["strict"]) for r in g) / len(g)) for g in groups.values()]
    metrics["average_accuracy"] = sum(avg for avg, _ in per_problem) / len(per_problem)
    metrics["strict_accuracy"] = sum(strict for _, strict in per_problem) / len(per_problem)
    low, high = bootstrap_ci([strict for _, strict in per_problem])
    metrics["pass@1_ci_low"], metrics["pass@1_ci_high"] = low, high
    metrics["problems"] = float(len(groups))
    return metrics


def selection_metrics(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Metrics of one chosen answer per problem (best-of-N, VM-MCTS): strict accuracy of the
    choice (also as `accuracy`, with its 95% bootstrap interval over problems) and its average
    accuracy (mean reward)."""
    chosen = list(rows)
    if not chosen:
        return {}
    strict = sum(bool(r["strict"]) for r in chosen) / len(chosen)
    low, high = bootstrap_ci([float(bool(r["strict"])) for r in chosen])
    return {
        "accuracy": strict,
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "strict_accuracy": strict,
        "average_accuracy": sum(float(r["reward"]) for r in chosen) / len(chosen),
        "problems": float(len(chosen)),
    }
