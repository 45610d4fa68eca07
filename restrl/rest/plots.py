"""The reward distribution the ReST filter acts on: per-problem mean reward and reward std,
with the `std_accept_threshold` drawn (the original code plots the same two histograms)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from restrl.evaluation.plots import save_figure


def per_problem_rewards(rows: Iterable[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    """(mean, population std) of the rewards of each (domain, problem_id), in first-seen order."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        key = (str(row.get("domain") or ""), str(row["problem_id"]))
        groups.setdefault(key, []).append(float(row["reward"]))
    means = [float(np.mean(r)) for r in groups.values()]
    stds = [float(np.std(r, ddof=0)) for r in groups.values()]
    return means, stds


def plot_reward_distribution(rows: Iterable[Mapping[str, Any]], std_accept_threshold: float,
                             path: str | Path) -> Path:
    """Two histograms over problems (mean reward; reward std with the filter threshold) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means, stds = per_problem_rewards(rows)
    kept = sum(s >= std_accept_threshold for s in stds)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    bins = np.linspace(0.0, 1.0, 21)
    left.hist(means, bins=bins, color="tab:blue")
    left.set_xlabel("mean reward of a problem's samples")
    left.set_ylabel("problems")
    right.hist(stds, bins=np.linspace(0.0, 0.5, 21), color="tab:orange")
    right.axvline(std_accept_threshold, color="black", linestyle="--",
                  label=f"std_accept_threshold {std_accept_threshold:g}")
    right.set_xlabel("reward std of a problem's samples")
    right.set_title(f"{kept} of {len(stds)} problems kept", fontsize=9)
    right.legend(fontsize=8)
    return save_figure(fig, path)
