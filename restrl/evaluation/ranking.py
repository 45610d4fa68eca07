"""Does a scorer rank programs the way the verifier does? Measured where the scorer is used.

On the completions of held-out problems (the evaluation's own samples, never rows of training
problems): AUC of the scores for telling a strict pass from a failure (the chance that a random
passing program scores above a random failing one; ties count half) and Spearman's rho of the
scores against the verified rewards. Calibration bins compare mean score with mean reward.

The pooled AUC compares programs of different problems too, so a scorer that only knows which
problems are hard scores well on it. Best-of-N picks among the samples of ONE problem: the
within-problem AUC counts only pairs (a passing and a failing sample of the same problem), the
ranking best-of-N and the search rely on.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence


def auc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n+ n-)); NaN without both classes."""
    from scipy.stats import rankdata

    pos = sum(bool(p) for p in positives)
    neg = len(positives) - pos
    if pos == 0 or neg == 0:
        return math.nan
    ranks = rankdata(scores)
    rank_sum = sum(r for r, p in zip(ranks, positives, strict=True) if p)
    return float((rank_sum - pos * (pos + 1) / 2) / (pos * neg))


def within_group_auc(scores: Sequence[float], positives: Sequence[bool],
                     groups: Sequence[Hashable]) -> tuple[float, int]:
    """(AUC over the (pass, fail) pairs of the same group, number of such pairs); ties count
    half; NaN when no group has both classes. Pairs are pooled, so a problem weighs by its
    pairs."""
    by_group: dict[Hashable, tuple[list[float], list[float]]] = {}
    for score, positive, group in zip(scores, positives, groups, strict=True):
        by_group.setdefault(group, ([], []))[0 if positive else 1].append(score)
    right = 0.0
    pairs = 0
    for passing, failing in by_group.values():
        for a in passing:
            right += sum(1.0 if a > b else 0.5 if a == b else 0.0 for b in failing)
        pairs += len(passing) * len(failing)
    return (right / pairs if pairs else math.nan), pairs


def ranking_metrics(scores: Sequence[float], rewards: Sequence[float], strict: Sequence[bool],
                    groups: Sequence[Hashable] | None = None) -> dict[str, float]:
    """auc (strict pass vs not), spearman (scores vs rewards), and the rows they rest on; with
    `groups` (each row's problem) also within_problem_auc and within_problem_pairs."""
    from scipy.stats import spearmanr

    rho = math.nan
    if len(scores) >= 2 and len(set(scores)) > 1 and len(set(rewards)) > 1:
        rho = float(spearmanr(scores, rewards).statistic)
    metrics = {"auc": auc(scores, strict), "spearman": rho, "rows": float(len(scores)),
               "positives": float(sum(bool(s) for s in strict))}
    if groups is not None:
        within, pairs = within_group_auc(scores, strict, groups)
        metrics |= {"within_problem_auc": within, "within_problem_pairs": float(pairs)}
    return metrics


def calibration_bins(scores: Sequence[float], rewards: Sequence[float],
                     bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean score, mean reward, rows) per equal-count bin of the scores, lowest first."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    size = max(1, math.ceil(len(order) / bins))
    out = []
    for start in range(0, len(order), size):
        chunk = order[start:start + size]
        out.append((sum(scores[i] for i in chunk) / len(chunk),
                    sum(rewards[i] for i in chunk) / len(chunk), len(chunk)))
    return out
