"""Best-of-N: score each problem's sampled programs with a scorer and keep the best.

As in the seed's evaluation (`evaluation/eval.py` with a reward model, `tasks/Common/task.py`):
`num_sample` fresh samples per problem, each scored as a WHOLE completion (ORM-style) by the
reward or value model: question = the raw problem text, answer = the full program
(`init_code + code.rstrip()`, a completions row's `program`); the highest score wins.

restrl's answer rule "vote" (`EvalConfig.answer_rules`, `restrl.answers`) instead keeps the
program whose identical copies' scores sum highest; with every score 1 it is the plain majority
vote, which needs no scorer and is reported beside it so that the scorer's own share shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from restrl.answers import pick_answer
from restrl.problems.model import Problem, index_problems
from restrl.scoring import Scorer

RM_TYPES = ("orm", "prm")


def prm_prefixes(answer: str) -> list[str]:
    """The partial answers a PRM scores: every prefix of `answer` that ends at a line boundary
    (any `str.splitlines` boundary), text unchanged, so the last one is the answer itself and
    the whole-answer (ORM) score is among them.

    Not `restrl.rest.solution_prefixes`, which strips the end and re-terminates each line, as
    the seed's ReST-GRPO data does.
    """
    lines = answer.splitlines(keepends=True)
    return ["".join(lines[: i + 1]) for i in range(len(lines))] or [answer]


def score_answers(scorer: Scorer, questions: Sequence[str], answers: Sequence[str],
                  rm_type: str = "orm") -> list[float]:
    """Scores of (raw question, full program) pairs, in one scorer call.

    "orm" (default, the seed's best-of-N): the score of the whole program. "prm" (a restrl
    option, not in the seed's best-of-N): the lowest score over the program's line prefixes,
    so one bad step sinks it; all prefixes go in one batch.
    """
    if rm_type not in RM_TYPES:
        raise ValueError(f"rm_type must be one of {RM_TYPES}, got {rm_type!r}")
    if rm_type == "orm":
        return scorer.score(questions, answers)
    owners: list[int] = []
    flat_questions: list[str] = []
    flat_answers: list[str] = []
    for index, (question, answer) in enumerate(zip(questions, answers, strict=True)):
        for prefix in prm_prefixes(answer):
            owners.append(index)
            flat_questions.append(question)
            flat_answers.append(prefix)
    scores = scorer.score(flat_questions, flat_answers)
    best: list[float] = [float("inf")] * len(answers)
    for owner, score in zip(owners, scores, strict=True):
        best[owner] = min(best[owner], score)
    return best


def score_completions(scorer: Scorer, completions: Sequence[Mapping[str, Any]],
                      problems: Iterable[Problem], rm_type: str = "orm") -> list[float]:
    """Scores of completions rows (with domain, problem_id, program): each row's full
    `program` against its problem's raw text (`Problem.prompt`), the Scorer contract."""
    by_key = index_problems(problems)
    questions = [by_key[(str(c["domain"]), str(c["problem_id"]))].prompt for c in completions]
    return score_answers(scorer, questions, [str(c["program"]) for c in completions], rm_type)


def choose_best_of_n(completions: Sequence[Mapping[str, Any]], scores: Sequence[float],
                     n: int | None = None, rule: str = "best") -> list[dict[str, Any]]:
    """Per problem ((domain, problem_id)), the answer among its first `n` samples by `rule`
    (`pick_answer`; ties: lowest sample_idx)."""
    by_problem: dict[tuple[str, str], list[tuple[int, Mapping[str, Any], float]]] = {}
    for row, score in zip(completions, scores, strict=True):
        key = (str(row.get("domain", "")), str(row["problem_id"]))
        by_problem.setdefault(key, []).append((int(row["sample_idx"]), row, float(score)))
    chosen = []
    for key in sorted(by_problem):
        candidates = sorted(by_problem[key], key=lambda item: item[0])
        if n is not None:
            candidates = candidates[:n]
        picked = pick_answer([str(item[1]["program"]) if rule == "vote" else ""
                              for item in candidates],
                             [item[2] for item in candidates], rule)
        _, row, score = candidates[picked]
        chosen.append({**dict(row), "score": score, "budget": len(candidates)})
    return chosen
