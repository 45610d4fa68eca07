"""What a method spent per problem: completions generated and tokens generated.

Every evaluated method reports both (means over problems), so methods are compared at a budget
that is stated, not assumed. A search that generates more than its budget fails loudly
(`restrl.search.run_mcts`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from restrl.evaluation.metrics import group_by_problem


def sampling_budget(completions: Iterable[Mapping[str, Any]], n: int) -> dict[str, float]:
    """Mean per problem of the completions and completion tokens of its first `n` samples
    (what pass@1 over one sample, or best-of-n over n, costs)."""
    groups = group_by_problem(completions)
    if not groups:
        return {"completions": 0.0, "tokens": 0.0}
    first = [sorted(g, key=lambda c: int(c["sample_idx"]))[:n] for g in groups.values()]
    return {"completions": sum(len(f) for f in first) / len(first),
            "tokens": sum(sum(int(c["completion_tokens"]) for c in f) for f in first)
            / len(first)}


def spent_budget(spent: Sequence[tuple[int, int]]) -> dict[str, float]:
    """Means of per-problem (completions, tokens) pairs, e.g. a search's."""
    if not spent:
        return {"completions": 0.0, "tokens": 0.0}
    return {"completions": sum(c for c, _ in spent) / len(spent),
            "tokens": sum(t for _, t in spent) / len(spent)}
