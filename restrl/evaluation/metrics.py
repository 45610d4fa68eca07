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


def group_by_problem(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row["problem_id"]), []).append(row)
    return groups


def sample_metrics(rows: Iterable[Mapping[str, Any]], ks: Sequence[int] = (1,)) -> dict[str, float]:
    """Metrics of plain sampling over verdict rows (reward, strict, problem_id).

    pass@k: mean over problems of the unbiased estimator (strict passes count as correct);
    average_accuracy: mean reward over all samples (partial credit); strict_accuracy: mean of
    strict over all samples (= pass@1 when every problem has the same number of samples).
    """
    groups = group_by_problem(rows)
    if not groups:
        return {}
    metrics: dict[str, float] = {}
    for k in ks:
        usable = [g for g in groups.values() if len(g) >= k]
        if usable:
            metrics[f"pass@{k}"] = sum(
                pass_at_k(len(g), sum(bool(r["strict"]) for r in g), k) for g in usable
            ) / len(usable)
    samples = [r for g in groups.values() for r in g]
    metrics["average_accuracy"] = sum(float(r["reward"]) for r in samples) / len(samples)
    metrics["strict_accuracy"] = sum(bool(r["strict"]) for r in samples) / len(samples)
    metrics["problems"] = float(len(groups))
    return metrics


def selection_metrics(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Metrics of one chosen answer per problem (best-of-N, VM-MCTS): accuracy of the choice."""
    chosen = list(rows)
    if not chosen:
        return {}
    return {
        "accuracy": sum(bool(r["strict"]) for r in chosen) / len(chosen),
        "average_accuracy": sum(float(r["reward"]) for r in chosen) / len(chosen),
        "problems": float(len(chosen)),
    }
