"""What a value model learns from: its input text, the (text, reward) examples of `value_data`
rows, and the seeded train/test split."""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

# The seed's input format (rms/input.py): the raw question, then the full (partial) program.
VALUE_TEXT = "\n<prompt>\n{question}\n<answer>\n{answer}\n"


def value_text(question: str, answer: str) -> str:
    """The VM's input text: the raw problem text and the full (partial) program, init_code
    included, in the seed's format (`VALUE_TEXT`); the same in training and scoring."""
    return VALUE_TEXT.format(question=question, answer=answer)


class ValueExample(NamedTuple):
    """One training row: the VM's input text, its target, and its problem (the raw problem
    text, which the within-problem ranking term groups by)."""

    text: str
    reward: float
    problem: str


def value_examples(rows: Iterable[Mapping[str, Any]] | Any) -> list[ValueExample]:
    """Examples from `value_data` rows: dicts or a pyarrow Table with `prompt` (the raw problem
    text), `answer` (the full state, init_code included) and `reward` columns (other columns
    are ignored)."""
    import pyarrow as pa

    if isinstance(rows, pa.Table):
        rows = rows.select(["prompt", "answer", "reward"]).to_pylist()
    examples = []
    for i, row in enumerate(rows):
        reward = float(row["reward"])
        if not math.isfinite(reward):
            raise ValueError(f"row {i} has a non-finite reward {row['reward']!r}")
        examples.append(ValueExample(value_text(row["prompt"], row["answer"]), reward,
                                     str(row["prompt"])))
    return examples


def problem_batches(problems: Sequence[Hashable], batch_size: int, seed: int) -> list[int]:
    """An order of the rows whose consecutive `batch_size` chunks are the rows of one problem
    where it can: problems in a seeded random order, each one's rows shuffled, cut into
    chunks (a chunk spans two problems only at a boundary), the chunks shuffled."""
    rng = random.Random(seed)
    by_problem: dict[Hashable, list[int]] = {}
    for index, problem in enumerate(problems):
        by_problem.setdefault(problem, []).append(index)
    groups = list(by_problem.values())
    rng.shuffle(groups)
    order = []
    for group in groups:
        rng.shuffle(group)
        order += group
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(chunks)
    return [index for chunk in chunks for index in chunk]


def split_indices(n: int, eval_fraction: float, seed: int,
                  min_eval_rows: int = 0) -> tuple[list[int], list[int]]:
    """Seeded shuffle of range(n) into (train, test).

    test = n - int(n * (1 - eval_fraction)) rows (the seed's 95/5 split, rounding the test
    side up), raised to `min_eval_rows`, then capped at (n - 1) // 2 so the train split is
    always the larger one: the seed raises the test split to 100 rows and asserts train >
    test, i.e. it refuses data sets of 200 rows or fewer; restrl shrinks the test split
    instead (and holds none out below 3 rows). eval_fraction 0 holds out nothing.
    """
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_eval = 0
    if eval_fraction > 0:
        n_eval = max(n - int(n * (1.0 - eval_fraction)), min_eval_rows)
        n_eval = min(n_eval, (n - 1) // 2)
    return order[n_eval:], order[:n_eval]
