"""Evaluation: pass@k and accuracies, best-of-N selection with a scorer, plots."""

from restrl.evaluation.metrics import pass_at_1, pass_at_k, sample_metrics, selection_metrics
from restrl.evaluation.selection import (
    choose_best_of_n,
    prm_prefixes,
    score_answers,
    score_completions,
)

__all__ = [
    "choose_best_of_n",
    "pass_at_1",
    "pass_at_k",
    "prm_prefixes",
    "sample_metrics",
    "score_answers",
    "score_completions",
    "selection_metrics",
]
