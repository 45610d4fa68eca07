"""Monte Carlo tree search over line-level actions (DESIGN.md step 5), batched across problems.

One tree per problem. A node's state is the problem's `init_code` followed by the actions on the
path from the root; an action is one line of code with its "\\n", or a whole sample that ends the
program (a terminal action). One iteration on one tree:

1. select:        from the root, step to the visible child with the highest UCT score
                      V + c * sqrt((1 + ln N_parent) / (eps + n))
                  until the node is not expanded: that is the leaf;
2. expand:        sample `num_sample` continuations of the leaf's state; each sample's first line
                  is an action (identical actions merge into one child) and its full program
                  (state + sample) is stored on the leaf as a completion; if the leaf has more than
                  `num_decision` children, only the `num_decision` best by V stay visible;
3. rollout:       train phase: verify the leaf's completions; the rollout is one visit and the
                  reward per distinct completion. Test phase: the value model scores every new
                  child's state (its prior; one visit per sample that chose it, as in the seed)
                  and every completion; the rollout is the new children's visits and values.
                  A terminal leaf is not expanded: its rollout is one visit with its program's
                  value (verifier reward, or score);
4. backpropagate: add the rollout's visits and summed value to the leaf and all its ancestors.

V = value_sum / visits; a node never visited has V = its prior (test phase), else 0. Ties in the
UCT score and in the visibility ranking go to the child created first, so a search is a function
of its samples.

Lockstep batching: `run_mcts` advances every problem's tree by one iteration at a time, so one
iteration costs ONE `generate` call for the selected leaves of all trees and ONE verify (or
score) call for every new program across trees. `run_mcts_sequential` runs the same code on one
tree after another. With a generator whose samples depend on the prompt only (scripted, greedy,
or seeded per prompt), both return identical trees.

Seeds: the generate call of iteration i gets `call_seed(config.seed, problem_ids, i)`, a hash of
the config seed, the ids of the problems whose leaves the call expands (in order) and i. In a
sequential search a call holds one problem, so every (problem, iteration) has its own seed; a
lockstep call holds many, so backends that seed per call (transformers, vLLM) draw other samples
in the two modes, by design of those backends, not of the search.

Values are cached per tree: a program (or, in the test phase, a state) is verified or scored
once, and a repeat (the same program sampled at another node, a terminal child whose state is
its parent's completion) reuses the value. Verification and scoring are taken to be
deterministic, as they are for the test-based domains.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from restrl.generation import GenerationConfig, Generator
from restrl.problems.model import Problem
from restrl.prompts import format_prompt, postprocess, stop_strings
from restrl.scoring import Scorer

Phase = Literal["train", "test"]
PHASES: tuple[str, ...] = ("train", "test")


# ----------------------------------------------------------------------------- configuration


@dataclass
class MCTSConfig:
    """How the search runs (the ReST-RL seed's `sample_mcts.py` flags and defaults).

    Parameters that bound the search:
        iteration_limit (int | None, 100): iterations per tree (one iteration = select, expand,
            rollout, backpropagate); the seed's training runs use 100.
        time_limit (float | None, None): seconds of wall time per tree; the search stops at
            whichever limit comes first. In `run_mcts` the trees run side by side, so each gets
            the same wall-clock budget from the start of the call.

    Parameters of the tree:
        num_sample (int, 5): continuations sampled when a leaf is expanded; they give its
            children and its stored completions.
        num_decision (int, 5): most visible children per node; the rest (lowest V) are never
            selected. 5 as in the seed's README commands.
        exploration_constant (float, 0.2): c in the UCT score; 0.2 for collecting value targets,
            0.1 for VM-MCTS decoding (see `MCTSConfig.test_phase`), as in the seed.
        eps (float, 0.1): keeps the UCT exploration term finite for unvisited children.

    Parameters of the generation:
        temperature (float, 0.7), top_p (float, 1.0): the sampling distribution; diverse samples
            make a wider tree.
        max_tokens (int, 1024): most new tokens per sample.
        seed (int, 0): base of the per-call generation seeds (see `call_seed`).

    Parameter that chooses the value source:
        phase ("train" | "test", "train"): "train" verifies completions in the sandbox (value
            targets for the VM, DESIGN step 5); "test" uses a `Scorer` (the trained VM) as a
            process reward model and answers with the best-scored completion (DESIGN step 8).
    """

    iteration_limit: int | None = 100
    time_limit: float | None = None
    num_sample: int = 5
    num_decision: int = 5
    exploration_constant: float = 0.2
    eps: float = 0.1
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 1024
    phase: Phase = "train"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {self.phase!r}")
        if self.iteration_limit is None and self.time_limit is None:
            raise ValueError("set iteration_limit or time_limit (or both)")
        if self.iteration_limit is not None and self.iteration_limit < 0:
            raise ValueError(f"iteration_limit must be >= 0, got {self.iteration_limit}")
        if self.time_limit is not None and self.time_limit < 0:
            raise ValueError(f"time_limit must be >= 0, got {self.time_limit}")
        if self.num_sample < 1 or self.num_decision < 1:
            raise ValueError("num_sample and num_decision must be >= 1")
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")

    @classmethod
    def test_phase(cls, **overrides: Any) -> MCTSConfig:
        """The VM-MCTS decoding config: phase "test" and exploration constant 0.1 (the seed's)."""
        return cls(**{"phase": "test", "exploration_constant": 0.1, **overrides})

    def generation_config(self, stop: Sequence[str], seed: int) -> GenerationConfig:
        return GenerationConfig(n=self.num_sample, temperature=self.temperature, top_p=self.top_p,
                                max_tokens=self.max_tokens, stop=tuple(stop), seed=seed)


# ----------------------------------------------------------------------------- the tree


@dataclass
class Completion:
    """A sample's full program (node state + sample), stored on the node it was sampled from.

    reward: the verifier's reward (train phase) or the scorer's score (test phase); None until
    valued. verified: whether `reward` came from the verifier.
    """

    program: str
    reward: float | None = None
    verified: bool = False


@dataclass
class Node:
    """One state of the search. `parent_id` is -1 for the root; `children` are node ids in the
    order they were created; `prior` is the scorer's value of the state (test phase only)."""

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
    """The search tree of one problem; `nodes[i].node_id == i` and `nodes[0]` is the root."""

    problem_id: str
    nodes: list[Node]
    # Values already known for this problem, by program or state text (see the module docstring).
    known: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def new(cls, problem: Problem) -> Tree:
        root = Node(node_id=0, parent_id=-1, depth=0, action="", state=problem.init_code)
        return cls(problem.problem_id, [root])

    @property
    def root(self) -> Node:
        return self.nodes[0]

    @property
    def init_code(self) -> str:
        return self.root.state

    def answer(self, text: str) -> str:
        """A state or program without the problem's init_code: what follows the reply prefix."""
        return text[len(self.init_code):]

    def children(self, node: Node) -> list[Node]:
        return [self.nodes[i] for i in node.children]

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


def best_child(tree: Tree, node: Node, config: MCTSConfig) -> Node:
    """The visible child with the highest UCT score (the first created on a tie)."""
    visible = [child for child in tree.children(node) if child.visible]
    return max(visible, key=lambda child: uct(child, node.visits, config))


def select(tree: Tree, config: MCTSConfig) -> Node:
    """Step 1: follow the best UCT child from the root down to a node not yet expanded."""
    node = tree.root
    while node.expanded:
        node = best_child(tree, node, config)
    return node


def split_action(sample: str, finished: bool) -> tuple[str, bool]:
    """(action, terminal) of one sample: its first line with the "\\n", or the whole sample as a
    terminal action when it has no newline, or when it finished (stop string or EOS) with
    nothing but whitespace after its first line."""
    line, newline, rest = sample.partition("\n")
    if not newline or (finished and not rest.strip()):
        return sample, True
    return line + newline, False


def expand(tree: Tree, leaf: Node, samples: Sequence[tuple[str, bool]]) -> list[tuple[Node, int]]:
    """Step 2: the leaf's children from its (sample text, finished) pairs, each with the number
    of samples that chose it; every distinct program state + sample is stored on the leaf.

    A merged action is terminal only if every sample that chose it ended there: a child that
    some sample continues past stays expandable.
    """
    counts: dict[str, int] = {}
    terminal: dict[str, bool] = {}
    programs = {c.program for c in leaf.completions}
    for text, finished in samples:
        action, ends = split_action(text, finished)
        counts[action] = counts.get(action, 0) + 1
        terminal[action] = terminal.get(action, True) and ends
        program = leaf.state + text
        if program not in programs:
            programs.add(program)
            leaf.completions.append(Completion(program))
    leaf.expanded = True
    return [(tree.add_child(leaf, action, terminal[action]), n) for action, n in counts.items()]


def hide_extra_children(tree: Tree, node: Node, num_decision: int) -> None:
    """Keep only the `num_decision` children with the best V visible (stable on ties)."""
    ranked = sorted(tree.children(node), key=lambda child: child.value, reverse=True)
    for child in ranked[num_decision:]:
        child.visible = False


def rollout(tree: Tree, leaf: Node, new_children: Sequence[Node], phase: str) -> tuple[int, float]:
    """Step 3: (visits, summed value) the leaf's iteration adds; its values are already known."""
    if leaf.terminal:
        return 1, tree.known[leaf.state]
    if phase == "train":
        rewards = [c.reward for c in leaf.completions if c.reward is not None]
        return len(rewards), sum(rewards)
    return sum(c.visits for c in new_children), sum(c.value_sum for c in new_children)


def backpropagate(tree: Tree, node: Node, visits: int, value: float) -> None:
    """Step 4: add the rollout to `node` and every ancestor up to the root."""
    while True:
        node.visits += visits
        node.value_sum += value
        if node.parent_id < 0:
            return
        node = tree.nodes[node.parent_id]


def best_completion(tree: Tree) -> Completion | None:
    """The stored completion with the highest reward (the first stored on a tie): the answer of
    a test-phase search. None when nothing has been valued."""
    valued = [c for node in tree.nodes for c in node.completions if c.reward is not None]
    return max(valued, key=lambda c: c.reward or 0.0) if valued else None


# ----------------------------------------------------------------------------- lockstep search


class HasReward(Protocol):
    @property
    def reward(self) -> float: ...


class ProgramVerifier(Protocol):
    """What the train phase needs from `restrl.sandbox.Verifier`."""

    def verify(self, problems: Sequence[Problem], programs: Sequence[str]) -> Sequence[HasReward]:
        ...


@dataclass
class _Search:
    """One problem's search in progress: its formatted prompt and its tree."""

    problem: Problem
    prompt: str
    tree: Tree


def call_seed(seed: int, problem_ids: Sequence[str], iteration: int) -> int:
    """The generation seed of one call: a hash of (config seed, problem ids, iteration), < 2**31
    so that every backend accepts it."""
    key = json.dumps([seed, list(problem_ids), iteration])
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 2**31


def run_mcts(problems: Sequence[Problem], generator: Generator, tokenizer: Any,
             evaluator: ProgramVerifier | Scorer, config: MCTSConfig | None = None) -> list[Tree]:
    """Search a tree per problem, all trees in lockstep: one generate call and one verify (train
    phase, `evaluator` is a Verifier) or score (test phase, a Scorer) call per iteration."""
    config = config or MCTSConfig()
    _check_evaluator(evaluator, config.phase)
    ids = [p.problem_id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("problem ids must be unique: trees are recorded by problem id")
    searches = [_Search(p, format_prompt(p, tokenizer), Tree.new(p)) for p in problems]
    start = time.monotonic()
    iteration = 0
    while searches and not _limit_reached(config, iteration, start):
        _iterate(searches, generator, evaluator, config, iteration)
        iteration += 1
    return [search.tree for search in searches]


def run_mcts_sequential(problems: Sequence[Problem], generator: Generator, tokenizer: Any,
                        evaluator: ProgramVerifier | Scorer,
                        config: MCTSConfig | None = None) -> list[Tree]:
    """The same search, one tree after the other (the baseline that lockstep batching beats)."""
    return [run_mcts([p], generator, tokenizer, evaluator, config)[0] for p in problems]


def _limit_reached(config: MCTSConfig, iteration: int, start: float) -> bool:
    if config.iteration_limit is not None and iteration >= config.iteration_limit:
        return True
    return config.time_limit is not None and time.monotonic() - start >= config.time_limit


def _check_evaluator(evaluator: object, phase: str) -> None:
    needed = "verify" if phase == "train" else "score"
    if not callable(getattr(evaluator, needed, None)):
        kind = "a Verifier" if phase == "train" else "a Scorer"
        raise TypeError(f"the {phase} phase needs {kind} (with .{needed}), "
                        f"got {type(evaluator).__name__}")


def _iterate(searches: Sequence[_Search], generator: Generator,
             evaluator: ProgramVerifier | Scorer, config: MCTSConfig, iteration: int) -> None:
    """One iteration on every tree: select, expand (one generate call), value (one verify or
    score call), then rollout and backpropagate."""
    leaves = [select(search.tree, config) for search in searches]
    expanding = [i for i, leaf in enumerate(leaves) if not leaf.terminal]
    samples = _sample([searches[i] for i in expanding], [leaves[i] for i in expanding],
                      generator, config, iteration)
    new_children: dict[int, list[tuple[Node, int]]] = {
        i: expand(searches[i].tree, leaves[i], rows)
        for i, rows in zip(expanding, samples, strict=True)
    }
    _value(searches, leaves, new_children, evaluator, config.phase)
    for i, (search, leaf) in enumerate(zip(searches, leaves, strict=True)):
        children = [child for child, _ in new_children.get(i, [])]
        if not leaf.terminal:
            hide_extra_children(search.tree, leaf, config.num_decision)
        visits, value = rollout(search.tree, leaf, children, config.phase)
        backpropagate(search.tree, leaf, visits, value)


def _sample(searches: Sequence[_Search], leaves: Sequence[Node], generator: Generator,
            config: MCTSConfig, iteration: int) -> list[list[tuple[str, bool]]]:
    """(text, finished) of `num_sample` continuations per leaf, from one generate call. A leaf's
    prompt is its problem's formatted prompt (ending with the reply prefix, init_code included)
    followed by the leaf's state beyond init_code."""
    if not searches:
        return []
    pairs = list(zip(searches, leaves, strict=True))
    prompts = [search.prompt + search.tree.answer(leaf.state) for search, leaf in pairs]
    stops = sorted({stop for s in searches for stop in stop_strings(s.problem.domain)})
    seed = call_seed(config.seed, [s.problem.problem_id for s in searches], iteration)
    result = generator.generate(prompts, config.generation_config(stops, seed))
    rows = []
    for search, samples in zip(searches, result.samples, strict=True):
        row = []
        for sample in samples:
            # The backend already cut at the stops; cutting again keeps any generator honest.
            text, hit_stop = postprocess(sample.text, search.problem.domain)
            row.append((text, hit_stop or sample.finish_reason == "stop"))
        rows.append(row)
    return rows


def _value(searches: Sequence[_Search], leaves: Sequence[Node],
           new_children: dict[int, list[tuple[Node, int]]], evaluator: ProgramVerifier | Scorer,
           phase: str) -> None:
    """Value every text this iteration needs, across all trees, in one verify or score call;
    then write the values onto completions and (test phase) the new children."""
    pending: list[tuple[_Search, str]] = []
    for i, (search, leaf) in enumerate(zip(searches, leaves, strict=True)):
        texts = [leaf.state] if leaf.terminal else [c.program for c in leaf.completions]
        if phase == "test":
            texts += [child.state for child, _ in new_children.get(i, [])]
        for text in dict.fromkeys(texts):
            if text not in search.tree.known:
                pending.append((search, text))
    values = _evaluate(evaluator, phase, pending) if pending else []
    for (search, text), value in zip(pending, values, strict=True):
        search.tree.known[text] = value

    for i, (search, leaf) in enumerate(zip(searches, leaves, strict=True)):
        if leaf.terminal:
            continue
        known = search.tree.known
        for completion in leaf.completions:
            completion.reward = known[completion.program]
            completion.verified = phase == "train"
        if phase == "test":
            # The value model acts as a PRM: a new child's prior counts as one visit per sample.
            for child, count in new_children.get(i, []):
                child.prior = known[child.state]
                child.visits = count
                child.value_sum = count * child.prior


def _evaluate(evaluator: ProgramVerifier | Scorer, phase: str,
              pending: Sequence[tuple[_Search, str]]) -> list[float]:
    """The verifier's rewards (train) or the scorer's scores (test) of (search, text) pairs."""
    if phase == "train":
        verifier = cast(ProgramVerifier, evaluator)
        verdicts = verifier.verify([s.problem for s, _ in pending], [text for _, text in pending])
        return [float(verdict.reward) for verdict in verdicts]
    scorer = cast(Scorer, evaluator)
    scores = scorer.score([s.prompt for s, _ in pending],
                          [s.tree.answer(text) for s, text in pending])
    return [float(score) for score in scores]
