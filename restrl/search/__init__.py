"""MCTS over line-level actions (DESIGN.md steps 5, 6 and 8), batched across problems.

    trees = run_mcts(problems, generator, tokenizer, verifier, MCTSConfig())          # train
    nodes, completions = trees_to_tables(trees)
    rows = value_data(trees, problems)                                                # VM data
    trees = run_mcts(problems, generator, tokenizer, value_model, MCTSConfig.test_phase())
    answer = best_completion(trees[0])                                                # VM-MCTS
    [(completions, tokens), *_] = search_budget(trees)                                # its cost

`config` holds the settings, `tree` the tree and the four steps of an iteration, `mcts` the
lockstep driver, `tables` the Parquet round trip (loaded on first use: the settings and the
search need no pyarrow). The tokenizer only formats the generation prompts; the value model
scores (problem.prompt, full state) pairs.
"""

from typing import Any

from restrl.search.config import MCTSConfig
from restrl.search.mcts import call_seed, run_mcts, run_mcts_sequential
from restrl.search.tree import (
    Completion,
    Node,
    Tree,
    best_completion,
    search_budget,
    split_action,
    tie_seed,
)

_TABLES_API = ("MCTS_COMPLETIONS", "MCTS_NODES", "VALUE_DATA", "tables_to_trees",
               "trees_to_tables", "value_data")

__all__ = [
    "MCTS_COMPLETIONS",
    "MCTS_NODES",
    "VALUE_DATA",
    "Completion",
    "MCTSConfig",
    "Node",
    "Tree",
    "best_completion",
    "call_seed",
    "run_mcts",
    "run_mcts_sequential",
    "search_budget",
    "split_action",
    "tables_to_trees",
    "tie_seed",
    "trees_to_tables",
    "value_data",
]


def __getattr__(name: str) -> Any:
    if name in _TABLES_API:
        from restrl.search import tables

        return getattr(tables, name)
    raise AttributeError(f"module 'restrl.search' has no attribute {name!r}")
