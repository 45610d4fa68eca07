"""The scorer contract shared by value models, reward models and MCTS (DESIGN steps 7-8)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Scorer(Protocol):
    """Scores (prompt, answer) pairs; higher is better. `prompt` is the formatted prompt
    (ending with the reply prefix), `answer` the code after the problem's init_code (a partial
    program for PRM-style scoring, a full one for ORM-style scoring)."""

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]: ...
