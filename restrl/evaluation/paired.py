"""Is the challenger really better? A paired comparison of two policies over the same problems.

Both policies are evaluated on the same problems in the same run; each problem gives a pair of
scores (its strict pass rate under the method). The gain is the mean of the per-problem
differences; its p-value is one-sided, from a paired bootstrap over problems: the share of
resampled mean differences that are <= 0 (how often a resample of the problems shows no gain).
A gain found on a few lucky problems gets a large p-value and is not promoted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from restrl.evaluation.metrics import group_by_problem

ProblemScores = dict[tuple[str, str], float]


@dataclass(frozen=True)
class PairedComparison:
    """Challenger vs champion on the same problems."""

    champion: float
    challenger: float
    gain: float
    p_value: float
    problems: int

    def as_dict(self) -> dict[str, float]:
        return {"champion": self.champion, "challenger": self.challenger, "gain": self.gain,
                "p_value": self.p_value, "problems": float(self.problems)}


def problem_scores(rows: Iterable[Mapping[str, Any]], method: str,
                   budget: int | None = None) -> ProblemScores:
    """Per problem, the share of strict passes among an `eval_results` table's rows of `method`
    (and `budget`, e.g. best-of-N's N): pass@1 for sampling, 0/1 for one chosen answer."""
    chosen = [r for r in rows if r["method"] == method
              and (budget is None or int(r["budget"]) == budget)]
    return {key: sum(bool(r["strict"]) for r in group) / len(group)
            for key, group in group_by_problem(chosen).items()}


def compare_paired(champion: ProblemScores, challenger: ProblemScores, resamples: int = 10_000,
                   seed: int = 0) -> PairedComparison:
    """The challenger's mean gain over the champion on their common problems and its one-sided
    paired-bootstrap p-value."""
    import numpy as np

    keys = sorted(set(champion) & set(challenger))
    if not keys:
        raise ValueError("the two evaluations share no problem: they cannot be compared")
    if len(keys) < max(len(champion), len(challenger)):
        raise ValueError("the two evaluations cover different problems: compare them on the "
                         "same problem set")
    a = np.array([champion[k] for k in keys])
    b = np.array([challenger[k] for k in keys])
    diff = b - a
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    return PairedComparison(champion=float(a.mean()), challenger=float(b.mean()),
                            gain=float(diff.mean()), p_value=float((means <= 0).mean()),
                            problems=len(keys))
