"""MCTS trees as tables (`mcts_nodes`, `mcts_completions`) and the VM's reward data (DESIGN.md
steps 5-6).

`trees_to_tables` and `tables_to_trees` round-trip exactly: a tree read back from Parquet
searches on as if it had never left memory (its value cache is rebuilt from the stored values).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from restrl.problems.model import Problem
from restrl.prompts import format_prompt
from restrl.search.mcts import Completion, Node, Tree

# One tree node. `value` = value_sum / visits (prior, else 0, when never visited) is written for
# readers; `tables_to_trees` recomputes it. `prior` is null outside the test phase.
MCTS_NODES = pa.schema([
    ("problem_id", pa.string()),
    ("node_id", pa.int64()),
    ("parent_id", pa.int64()),        # -1 for the root
    ("depth", pa.int64()),
    ("action", pa.string()),          # the line (or terminal sample) that led here; "" at the root
    ("state", pa.string()),           # init_code + the actions from the root
    ("visits", pa.int64()),
    ("value_sum", pa.float64()),
    ("value", pa.float64()),
    ("prior", pa.float64()),
    ("terminal", pa.bool_()),
    ("visible", pa.bool_()),
    ("expanded", pa.bool_()),
])

# One completion stored on the node it was sampled from.
MCTS_COMPLETIONS = pa.schema([
    ("problem_id", pa.string()),
    ("node_id", pa.int64()),
    ("completion_idx", pa.int64()),   # order on its node
    ("program", pa.string()),         # full program: node state + sample
    ("answer", pa.string()),          # program without init_code
    ("reward", pa.float64()),         # train: verifier reward; test: scorer score; null: unvalued
    ("verified", pa.bool_()),         # whether reward came from the verifier
])

# One value-model training row (DESIGN step 6).
VALUE_DATA = pa.schema([
    ("prompt", pa.string()),          # formatted prompt, ending with the reply prefix
    ("answer", pa.string()),          # state or program without init_code
    ("reward", pa.float64()),
    ("source", pa.string()),          # "terminal" (completion) or "intermediate" (node state)
    ("problem_id", pa.string()),
])

SCHEMAS: dict[str, pa.Schema] = {
    "mcts_nodes": MCTS_NODES,
    "mcts_completions": MCTS_COMPLETIONS,
    "value_data": VALUE_DATA,
}


def trees_to_tables(trees: Sequence[Tree]) -> tuple[pa.Table, pa.Table]:
    """(mcts_nodes, mcts_completions) of `trees`, in tree, node and completion order."""
    nodes: list[dict[str, Any]] = []
    completions: list[dict[str, Any]] = []
    for tree in trees:
        for node in tree.nodes:
            nodes.append({
                "problem_id": tree.problem_id, "node_id": node.node_id,
                "parent_id": node.parent_id, "depth": node.depth, "action": node.action,
                "state": node.state, "visits": node.visits, "value_sum": node.value_sum,
                "value": node.value, "prior": node.prior, "terminal": node.terminal,
                "visible": node.visible, "expanded": node.expanded,
            })
            for idx, completion in enumerate(node.completions):
                completions.append({
                    "problem_id": tree.problem_id, "node_id": node.node_id,
                    "completion_idx": idx, "program": completion.program,
                    "answer": tree.answer(completion.program), "reward": completion.reward,
                    "verified": completion.verified,
                })
    return (pa.Table.from_pylist(nodes, schema=MCTS_NODES),
            pa.Table.from_pylist(completions, schema=MCTS_COMPLETIONS))


def tables_to_trees(nodes: pa.Table, completions: pa.Table) -> list[Tree]:
    """The trees recorded in `nodes` and `completions`, in order of first appearance."""
    trees: dict[str, Tree] = {}
    by_problem: dict[str, list[dict[str, Any]]] = {}
    for row in nodes.to_pylist():
        by_problem.setdefault(row["problem_id"], []).append(row)
    for problem_id, rows in by_problem.items():
        rows.sort(key=lambda row: row["node_id"])
        if [row["node_id"] for row in rows] != list(range(len(rows))):
            raise ValueError(f"{problem_id}: node ids are not 0..{len(rows) - 1}")
        tree = Tree(problem_id, [_node(row) for row in rows])
        for node in tree.nodes[1:]:  # children in creation order = ascending node id
            tree.nodes[node.parent_id].children.append(node.node_id)
        trees[problem_id] = tree

    stored = sorted(completions.to_pylist(),
                    key=lambda row: (row["problem_id"], row["node_id"], row["completion_idx"]))
    for row in stored:
        node = trees[row["problem_id"]].nodes[row["node_id"]]
        node.completions.append(Completion(row["program"], row["reward"], row["verified"]))

    for tree in trees.values():
        _rebuild_known(tree)
    return list(trees.values())


def _node(row: dict[str, Any]) -> Node:
    return Node(node_id=row["node_id"], parent_id=row["parent_id"], depth=row["depth"],
                action=row["action"], state=row["state"], terminal=row["terminal"],
                visits=row["visits"], value_sum=row["value_sum"], prior=row["prior"],
                visible=row["visible"], expanded=row["expanded"])


def _rebuild_known(tree: Tree) -> None:
    """The tree's value cache, from its valued completions and its nodes' priors."""
    for node in tree.nodes:
        if node.prior is not None:
            tree.known.setdefault(node.state, node.prior)
        for completion in node.completions:
            if completion.reward is not None:
                tree.known.setdefault(completion.program, completion.reward)


def value_data(trees: Sequence[Tree], problems: Sequence[Problem], tokenizer: Any) -> pa.Table:
    """The VM's training rows (schema `VALUE_DATA`): every verified completion with its reward
    ("terminal") and every expanded node's state with its mean value V ("intermediate").

    The prompt is the problem's formatted prompt; the answer is the text after init_code.
    Identical (prompt, answer, source) rows (the same program sampled at several nodes, or in
    two trees of the same problem) become one row whose reward is their mean, so no target
    counts twice. Rows keep the order of first appearance.
    """
    by_id = {p.problem_id: p for p in problems}
    grouped: dict[tuple[str, str, str], tuple[str, list[float]]] = {}
    for tree in trees:
        if tree.problem_id not in by_id:
            raise KeyError(f"no problem {tree.problem_id!r} among the problems given")
        prompt = format_prompt(by_id[tree.problem_id], tokenizer)
        rows = [(tree.answer(c.program), c.reward, "terminal")
                for node in tree.nodes for c in node.completions
                if c.verified and c.reward is not None]
        rows += [(tree.answer(node.state), node.value, "intermediate")
                 for node in tree.nodes if node.expanded]
        for answer, reward, source in rows:
            grouped.setdefault((prompt, answer, source), (tree.problem_id, []))[1].append(reward)
    return pa.Table.from_pylist(
        [{"prompt": prompt, "answer": answer, "reward": sum(rewards) / len(rewards),
          "source": source, "problem_id": problem_id}
         for (prompt, answer, source), (problem_id, rewards) in grouped.items()],
        schema=VALUE_DATA,
    )
