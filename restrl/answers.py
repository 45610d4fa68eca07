"""How a method answers from scored programs: the highest score, or a vote weighted by the scores.

"best" is the original ReST-RL rule for best-of-N and VM-MCTS. "vote" lets identical programs
pool their scores (weighted best-of-N, as in Snell et al. 2024); with every score 1 it is the
plain majority vote. Used by best-of-N (`restrl.evaluation.selection`) and by the test-phase
search's answer (`restrl.search.best_completion`).
"""

from __future__ import annotations

from collections.abc import Sequence

ANSWER_RULES = ("best", "vote")


def program_key(program: str) -> str:
    """What makes two programs the same vote: their lines, trailing whitespace and blank lines
    at either end aside (indentation counts)."""
    return "\n".join(line.rstrip() for line in program.splitlines()).strip("\n")


def pick_answer(programs: Sequence[str], scores: Sequence[float], rule: str = "best") -> int:
    """Index of the answer among scored programs; ties go to the first.

    "best": the highest score. "vote": the program whose copies (same `program_key`) have the
    highest summed score, answered by its first copy. A vote needs weights of one sign: when
    a score is negative (an external reward model's logits), every score is shifted by the
    lowest, which then weighs nothing. Sums are compared to 9 decimals, so that float rounding
    does not break a tie.
    """
    if rule not in ANSWER_RULES:
        raise ValueError(f"answer rule must be one of {ANSWER_RULES}, got {rule!r}")
    if not programs:
        raise ValueError("no programs to pick an answer from")
    if rule == "best":
        return max(range(len(programs)), key=lambda i: (scores[i], -i))
    shift = min(0.0, min(float(s) for s in scores))
    first: dict[str, int] = {}
    votes: dict[str, float] = {}
    for index, (program, score) in enumerate(zip(programs, scores, strict=True)):
        key = program_key(program)
        first.setdefault(key, index)
        votes[key] = votes.get(key, 0.0) + float(score) - shift
    return first[max(votes, key=lambda k: (round(votes[k], 9), -first[k]))]
