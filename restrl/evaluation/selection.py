"""Best-of-N: score N sampled answers per problem and keep the best (ORM or PRM scoring)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from restrl.scoring import Scorer

RM_TYPES = ("orm", "prm")


def line_prefixes(answer: str) -> list[str]:
    """Every prefix of `answer` that ends at a line boundary (the last one is the answer)."""
    lines = answer.splitlines(keepends=True)
    return ["".join(lines[: i + 1]) for i in range(len(lines))] or [answer]


def score_answers(scorer: Scorer, prompts: Sequence[str], answers: Sequence[str],
                  rm_type: str = "orm") -> list[float]:
    """ORM: the score of the whole answer. PRM: the lowest score over its line prefixes, so one
    bad step sinks the answer (the usual PRM aggregation); all prefixes go in one batch."""
    if rm_type not in RM_TYPES:
        raise ValueError(f"rm_type must be one of {RM_TYPES}, got {rm_type!r}")
    if rm_type == "orm":
        return scorer.score(prompts, answers)
    owners: list[int] = []
    flat_prompts: list[str] = []
    flat_answers: list[str] = []
    for index, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        for prefix in line_prefixes(answer):
            owners.append(index)
            flat_prompts.append(prompt)
            flat_answers.append(prefix)
    scores = scorer.score(flat_prompts, flat_answers)
    best: list[float] = [float("inf")] * len(answers)
    for owner, score in zip(owners, scores, strict=True):
        best[owner] = min(best[owner], score)
    return best


def choose_best_of_n(completions: Sequence[Mapping[str, Any]], scores: Sequence[float],
                     n: int | None = None) -> list[dict[str, Any]]:
    """Per problem, the highest-scoring of its first `n` samples (ties: lowest sample_idx)."""
    by_problem: dict[str, list[tuple[int, Mapping[str, Any], float]]] = {}
    for row, score in zip(completions, scores, strict=True):
        by_problem.setdefault(str(row["problem_id"]), []).append(
            (int(row["sample_idx"]), row, float(score)))
    chosen = []
    for problem_id in sorted(by_problem):
        candidates = sorted(by_problem[problem_id], key=lambda item: item[0])
        if n is not None:
            candidates = candidates[:n]
        sample_idx, row, score = max(candidates, key=lambda item: (item[2], -item[0]))
        chosen.append({**dict(row), "score": score, "budget": len(candidates)})
    return chosen
