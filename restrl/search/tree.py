"""The MCTS tree of one problem and the four steps of one iteration on it (DESIGN.md step 5).

A node's state is the problem's `init_code` followed by the actions on the path from the root;
an action is one line of code with its "\\n", or a whole sample that ends the program (a
terminal action). One iteration on one tree:

1. select:        from the root, step to the visible child with the highest UCT score
                      V + c * sqrt((1 + ln N_parent) / (eps + n))
                  (ties broken at random) until the node is not expanded: that is the leaf;
2. expand:        sample `num_sample` continuations of the leaf's state. Each sample is
                  rstrip()ed; with no newline left it is a terminal action `sample + "\\n"`,
                  else its action is its first line + "\\n". Identical actions merge into one
                  child, which keeps the first sample's terminal flag. EVERY sample's full program
                  `state + sample + "\\n"` is stored on the leaf as a completion, duplicates too.
                  Test phase: a new child's V is the value model's VM(q, state), counted as one
                  visit, and each further sample that chose it adds a visit with that V.
                  If the leaf has more than `num_decision` children, only the `num_decision`
                  best by V stay visible;
3. rollout:       train phase: verify every completion of the leaf: as many visits as samples,
                  their rewards summed (a duplicate counts each time). Test phase: the value
                  model scores the completions (the candidates for the answer) and the rollout
                  is the children's visits and value sums. A terminal leaf is not expanded: the
                  first time, one visit with its program's value (verifier reward, or VM score);
                  once visited, one visit with its V;
4. backpropagate: add the rollout's visits and summed value to the leaf and all its ancestors.

V = value_sum / visits (0 for a node never visited). Sampling and valuing, batched across
trees, are the driver's (`restrl.search.mcts`); the functions here touch one tree only.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

from restrl.answers import pick_answer
from restrl.problems.model import Problem, ProblemKey
from restrl.search.config import MCTSConfig

# ----------------------------------------------------------------------------- the tree


@dataclass
class Completion:
    """A sample's full program (node state + sample.rstrip() + "\\n"), stored on the node it was
    sampled from, one per sample.

    reward: the verifier's reward (train phase) or the scorer's score (test phase); None until
    valued. verified: whether `reward` came from the verifier.
    """

    program: str
    reward: float | None = None
    verified: bool = False


@dataclass
class Node:
    """One state of the search. `parent_id` is -1 for the root; `children` are node ids in the
    order they were created; `prior` is the scorer's VM(q, state) (test phase only)."""

    node_id: int
    parent_id: int
    depth: int
    action: str
    state: str
    terminal: bool = False
    visits: int = 0
    value_sum: float = 0.0
    prior: float | None = None
    visible: bool = True
    expanded: bool = False
    children: list[int] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)

    @property
    def value(self) -> float:
        """V: the mean value of the visits; a node never visited has its prior, else 0."""
        if self.visits:
            return self.value_sum / self.visits
        return self.prior if self.prior is not None else 0.0


@dataclass
class Tree:
    """The search tree of one problem; `nodes[i].node_id == i` and `nodes[0]` is the root.

    completions_generated / tokens_generated: what the search that built it sampled for it,
    the samples the generator returned and the completion tokens it reported for them (the
    budget a method is compared at). They belong to that `run_mcts` call: the tables do not
    store them, so a tree read back from them counts 0.
    """

    domain: str
    problem_id: str
    nodes: list[Node]
    # Values already known for this problem, by program or state text (see the module docstring).
    known: dict[str, float] = field(default_factory=dict, repr=False, compare=False)
    completions_generated: int = field(default=0, compare=False)
    tokens_generated: int = field(default=0, compare=False)

    @classmethod
    def new(cls, problem: Problem) -> Tree:
        root = Node(node_id=0, parent_id=-1, depth=0, action="", state=problem.init_code)
        return cls(problem.domain, problem.problem_id, [root])

    @property
    def key(self) -> ProblemKey:
        """(domain, problem_id), the problem's identity."""
        return (self.domain, self.problem_id)

    @property
    def root(self) -> Node:
        return self.nodes[0]

    @property
    def init_code(self) -> str:
        return self.root.state

    def answer(self, text: str) -> str:
        """A state or program without the problem's init_code: what follows the reply prefix."""
        return text[len(self.init_code):]

    def record_samples(self, tokens: Sequence[int]) -> None:
        """Charge the tree with one generate call's samples for it (their token counts)."""
        self.completions_generated += len(tokens)
        self.tokens_generated += sum(tokens)

    def children(self, node: Node) -> list[Node]:
        return [self.nodes[i] for i in node.children]

    def preorder(self) -> Iterator[Node]:
        """The nodes depth first, each before its children (in creation order)."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(self.children(node)))

    def add_child(self, parent: Node, action: str, terminal: bool) -> Node:
        child = Node(node_id=len(self.nodes), parent_id=parent.node_id, depth=parent.depth + 1,
                     action=action, state=parent.state + action, terminal=terminal)
        self.nodes.append(child)
        parent.children.append(child.node_id)
        return child


# ----------------------------------------------------------------------------- one iteration


def uct(child: Node, parent_visits: int, config: MCTSConfig) -> float:
    """V + c * sqrt((1 + ln N_parent) / (eps + n))."""
    # An expanded node always has visits; the guard only keeps the log finite.
    explore = math.sqrt((1 + math.log(max(parent_visits, 1))) / (config.eps + child.visits))
    return child.value + config.exploration_constant * explore


def tie_seed(seed: int, tree: Tree, node: Node) -> int:
    """The seed of the draw that breaks a UCT tie among `node`'s children: a hash of the config
    seed, the problem and (node, its visits). A node's visits grow at every pass, so each
    selection step draws afresh, while the draw depends on nothing outside the tree: lockstep,
    sequential and resumed searches break ties alike, and no random state needs saving."""
    key = json.dumps([seed, tree.domain, tree.problem_id, node.node_id, node.visits])
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def best_child(tree: Tree, node: Node, config: MCTSConfig) -> Node:
    """The visible child with the highest UCT score; a tie is broken at random (`tie_seed`)."""
    visible = [child for child in tree.children(node) if child.visible]
    scores = [uct(child, node.visits, config) for child in visible]
    top = max(scores)
    best = [child for child, score in zip(visible, scores, strict=True) if score == top]
    if len(best) == 1:
        return best[0]
    return random.Random(tie_seed(config.seed, tree, node)).choice(best)


def select(tree: Tree, config: MCTSConfig) -> Node:
    """Step 1: follow the best UCT child from the root down to a node not yet expanded."""
    node = tree.root
    while node.expanded:
        node = best_child(tree, node, config)
    return node


def split_action(sample: str) -> tuple[str, bool]:
    """(action, terminal) of one sample: rstrip()ed, a sample with no newline left is a
    terminal action `sample + "\\n"`; otherwise the action is its first line + "\\n"."""
    text = sample.rstrip()
    line, newline, _ = text.partition("\n")
    return line + "\n", not newline


def expand(tree: Tree, leaf: Node, samples: Sequence[str]) -> list[tuple[Node, int]]:
    """Step 2: the leaf's children from its samples, each with the number of samples that chose
    it. Every sample's program `state + sample.rstrip() + "\\n"` is stored on the leaf (for a
    terminal action that is the child's state). A merged action keeps the first sample's
    terminal flag."""
    children: dict[str, tuple[Node, int]] = {}
    for sample in samples:
        action, terminal = split_action(sample)
        leaf.completions.append(Completion(leaf.state + sample.rstrip() + "\n"))
        if action in children:
            child, count = children[action]
            children[action] = (child, count + 1)
        else:
            children[action] = (tree.add_child(leaf, action, terminal), 1)
    leaf.expanded = True
    return list(children.values())


def hide_extra_children(tree: Tree, node: Node, num_decision: int) -> None:
    """Keep only the `num_decision` children with the best V visible (stable on ties)."""
    ranked = sorted(tree.children(node), key=lambda child: child.value, reverse=True)
    for child in ranked[num_decision:]:
        child.visible = False


def rollout(tree: Tree, leaf: Node, visited: bool, phase: str) -> tuple[int, float]:
    """Step 3: (visits, summed value) the leaf's iteration adds; its values are already known.
    `visited`: whether the leaf had visits when it was selected."""
    if leaf.terminal:
        return 1, leaf.value if visited else tree.known[leaf.state]
    if phase == "train":
        rewards = [cast(float, c.reward) for c in leaf.completions]
        return len(rewards), sum(rewards)
    children = tree.children(leaf)
    return sum(c.visits for c in children), sum(c.value_sum for c in children)


def backpropagate(tree: Tree, node: Node, visits: int, value: float) -> None:
    """Step 4: add the rollout to `node` and every ancestor up to the root."""
    while True:
        node.visits += visits
        node.value_sum += value
        if node.parent_id < 0:
            return
        node = tree.nodes[node.parent_id]


def search_budget(trees: Sequence[Tree]) -> list[tuple[int, int]]:
    """(completions_generated, tokens_generated) per tree: what each search cost."""
    return [(tree.completions_generated, tree.tokens_generated) for tree in trees]


def best_completion(tree: Tree, rule: str = "best") -> Completion | None:
    """The answer of a test-phase search among its stored, valued completions, in depth-first
    node order: by default the highest reward, the first on a tie (as the original's stable
    sort over its preorder list); `rule="vote"`: the program whose copies' rewards sum highest
    (`restrl.answers.pick_answer`). None when nothing has been valued."""
    valued = [c for node in tree.preorder() for c in node.completions if c.reward is not None]
    if not valued:
        return None
    return valued[pick_answer([c.program for c in valued], [c.reward or 0.0 for c in valued],
                              rule)]
