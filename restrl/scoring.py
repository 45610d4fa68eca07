"""The scorer contract shared by value models, reward models and MCTS (DESIGN steps 7-8)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Scorer(Protocol):
    """Scores (question, answer) pairs; higher is better.

    `question` is the RAW problem text (`Problem.prompt`: no chat template, no instructions,
    no reply prefix). `answer` is the FULL program or state, the problem's init_code included
    (`init_code + code`: a partial program when MCTS scores a node, a whole one when best-of-N
    scores a completion, e.g. a completions row's `program`). This is what the seed's reward
    models see (`rm.eval_batch(q, states)`) and what `value_data` rows hold (prompt = raw
    problem text, answer = full state), so training and scoring read the same pairs; each
    scorer builds its own text from them (the VM format, or a reward model's chat template).
    """

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> list[float]: ...
