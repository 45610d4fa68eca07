"""MCTS over line-level actions (DESIGN.md steps 5, 6 and 8), batched across problems.

    trees = run_mcts(problems, generator, tokenizer, verifier, MCTSConfig())          # train
    nodes, completions = trees_to_tables(trees)
    rows = value_data(trees, problems)                                                # VM data
    trees = run_mcts(problems, generator, tokenizer, value_model, MCTSConfig.test_phase())
    answer = best_completion(trees[0])                                                # VM-MCTS

The tokenizer only formats the generation prompts; the value model scores (problem.prompt,
full state) pairs.
"""

from restrl.search.mcts import (
    Completion,
    MCTSConfig,
    Node,
    Tree,
    best_completion,
    call_seed,
    run_mcts,
    run_mcts_sequential,
    split_action,
    tie_seed,
)
from restrl.search.tables import (
    MCTS_COMPLETIONS,
    MCTS_NODES,
    VALUE_DATA,
    tables_to_trees,
    trees_to_tables,
    value_data,
)

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
    "split_action",
    "tables_to_trees",
    "tie_seed",
    "trees_to_tables",
    "value_data",
]
