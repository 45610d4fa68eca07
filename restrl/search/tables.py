"""MCTS trees as tables (`mcts_nodes`, `mcts_completions`) and the VM's reward data (DESIGN.md
steps 5-6).

`trees_to_tables` and `tables_to_trees` round-trip exactly, duplicate completions included: a
tree read back from Parquet searches on as if it had never left memory (its value cache is
rebuilt from the stored values; tie-breaking needs no saved random state, see `tie_seed`).
A problem is identified by (domain, problem_id) in every table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from restrl.artifacts.schemas import MCTS_COMPLETIONS, MCTS_NODES, VALUE_DATA
from restrl.problems.model import Problem, ProblemKey, index_problems
from restrl.search.tree import Completion, Node, Tree


def trees_to_tables(trees: Sequence[Tree]) -> tuple[pa.Table, pa.Table]:
    """(mcts_nodes, mcts_completions) of `trees`, in tree, node and completion order."""
    nodes: list[dict[str, Any]] = []
    completions: list[dict[str, Any]] = []
    for tree in trees:
        for node in tree.nodes:
            nodes.append({
                "domain": tree.domain, "problem_id": tree.problem_id, "node_id": node.node_id,
                "parent_id": node.parent_id, "depth": node.depth, "action": node.action,
                "state": node.state, "visits": node.visits, "value_sum": node.value_sum,
                "value": node.value, "prior": node.prior, "terminal": node.terminal,
                "visible": node.visible, "expanded": node.expanded,
            })
            for idx, completion in enumerate(node.completions):
                completions.append({
                    "domain": tree.domain, "problem_id": tree.problem_id,
                    "node_id": node.node_id, "completion_idx": idx,
                    "program": completion.program, "answer": tree.answer(completion.program),
                    "reward": completion.reward, "verified": completion.verified,
                })
    return (pa.Table.from_pylist(nodes, schema=MCTS_NODES),
            pa.Table.from_pylist(completions, schema=MCTS_COMPLETIONS))


def tables_to_trees(nodes: pa.Table, completions: pa.Table) -> list[Tree]:
    """The trees recorded in `nodes` and `completions`, in order of first appearance."""
    by_problem: dict[ProblemKey, list[dict[str, Any]]] = {}
    for row in nodes.to_pylist():
        by_problem.setdefault((row["domain"], row["problem_id"]), []).append(row)
    trees: dict[ProblemKey, Tree] = {}
    for (domain, problem_id), rows in by_problem.items():
        rows.sort(key=lambda row: row["node_id"])
        if [row["node_id"] for row in rows] != list(range(len(rows))):
            raise ValueError(f"{domain}/{problem_id}: node ids are not 0..{len(rows) - 1}")
        tree = Tree(domain, problem_id, [_node(row) for row in rows])
        for node in tree.nodes[1:]:  # children in creation order = ascending node id
            tree.nodes[node.parent_id].children.append(node.node_id)
        trees[tree.key] = tree

    stored = sorted(completions.to_pylist(), key=lambda row: (
        row["domain"], row["problem_id"], row["node_id"], row["completion_idx"]))
    for row in stored:
        node = trees[(row["domain"], row["problem_id"])].nodes[row["node_id"]]
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


def value_data(trees: Sequence[Tree], problems: Sequence[Problem]) -> pa.Table:
    """The VM's training rows (schema `VALUE_DATA`) from train-phase trees, as the seed builds
    them: per tree, every verified completion with its reward ("terminal"), then every
    expanded node's state with its V ("intermediate"), nodes depth first.

    prompt = the raw problem text, answer = the full program or state (init_code included),
    exactly what the VM scores in the test phase. Duplicates stay: a program sampled k times
    is k rows, so the targets weigh programs as the search sampled them.
    """
    by_key = index_problems(problems)
    rows: list[dict[str, Any]] = []
    for tree in trees:
        if tree.key not in by_key:
            raise KeyError(f"no problem {tree.domain}/{tree.problem_id} among the problems given")
        base = {"prompt": by_key[tree.key].prompt, "problem_id": tree.problem_id,
                "domain": tree.domain}
        nodes = list(tree.preorder())
        rows += [{**base, "answer": c.program, "reward": c.reward, "source": "terminal"}
                 for node in nodes for c in node.completions
                 if c.verified and c.reward is not None]
        rows += [{**base, "answer": node.state, "reward": node.value, "source": "intermediate"}
                 for node in nodes if node.expanded]
    return pa.Table.from_pylist(rows, schema=VALUE_DATA)
