"""Monte Carlo tree search over line-level actions (DESIGN.md step 5), batched across problems.

One tree per problem. A node's state is the problem's `init_code` followed by the actions on the
path from the root; an action is one line of code with its "\\n", or a whole sample that ends the
program (a terminal action). One iteration on one tree:

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

V = value_sum / visits (0 for a node never visited). The search stops at `iteration_limit`
iterations per tree, or, only without one, when the tree's clock reaches `time_limit`.

Lockstep batching: `run_mcts` advances every problem's tree by one iteration at a time, so one
iteration costs ONE `generate` call for the selected leaves of all trees (one per stop-string
set when a batch mixes domains with different stops) and ONE verify (or score) call for every
new text across trees. `run_mcts_sequential` runs the same code on one tree after another. With
a generator whose samples depend on the prompt only (scripted, greedy, or seeded per prompt),
both return identical trees: tie-breaking draws depend on the tree alone (`tie_seed`).

Time: each tree keeps its own clock, charged with its share of every iteration it takes part
in: the generate calls split over the prompts in them, the verify/score call split over the
texts each tree sent, the rest split evenly. A batch of K problems thus spends about
K x `time_limit` seconds, as K searches one after the other would, and a tree that stops frees
the batch for the others.

Seeds: a generate call of iteration i gets `call_seed(config.seed, keys, i)`, a hash of the
config seed, the (domain, problem_id) keys of the problems whose leaves it expands (in order)
and i. In a sequential search a call holds one problem, so every (problem, iteration) has its
own seed; a lockstep call holds many, so backends that seed per call (transformers, vLLM) draw
other samples in the two modes, by design of those backends, not of the search.

Values are cached per tree: a program (or, in the test phase, a state) is verified or scored
once, and a repeat (the same program sampled again, a terminal child whose state is its
parent's completion) reuses the value; every repeat still counts in the visits and sums.
Verification and scoring are taken to be deterministic, as they are for the test-based domains.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from restrl.generation import GenerationConfig, Generator
from restrl.problems.model import Problem, ProblemKey
from restrl.prompts import format_prompt, postprocess, stop_strings
from restrl.scoring import Scorer

Phase = Literal["train", "test"]
PHASES: tuple[str, ...] = ("train", "test")
Clock = Callable[[], float]


# ----------------------------------------------------------------------------- configuration


@dataclass
class MCTSConfig:
    """How the search runs (the ReST-RL seed's `sample_mcts.py` flags and defaults).

    Parameters that bound the search:
        iteration_limit (int | None, 100): iterations per tree (one iteration = select, expand,
            rollout, backpropagate); the seed's training runs use 100. When set, it alone
            bounds the search and `time_limit` is ignored, as in the seed.
        time_limit (float | None, None): seconds of search per problem, used only when
            `iteration_limit` is None. Each tree has its own clock (its share of the batched
            calls, see the module docstring), so lockstep batching does not shrink a problem's
            budget.

    Parameters of the tree:
        num_sample (int, 5): continuations sampled when a leaf is expanded; they give its
            children and its stored completions (one per sample).
        num_decision (int, 5): most visible children per node; the rest (lowest V) are never
            selected. 5 as in the seed's README commands (its script's default is 3).
        exploration_constant (float, 0.2): c in the UCT score; 0.2 for collecting value targets,
            0.1 for VM-MCTS decoding (see `MCTSConfig.test_phase`), as in the seed.
        eps (float, 0.1): keeps the UCT exploration term finite for unvisited children.

    Parameters of the generation:
        temperature (float, 0.7), top_p (float, 1.0): the sampling distribution; diverse samples
            make a wider tree.
        max_tokens (int, 1024): most new tokens per sample.
        seed (int, 0): base of the per-call generation seeds (`call_seed`) and of the random
            tie-breaking in UCT selection (`tie_seed`): the same seed gives the same search.

    Parameter that chooses the value source:
        phase ("train" | "test", "train"): "train" verifies completions in the sandbox (value
            targets for the VM, DESIGN step 5); "test" uses a `Scorer` (the trained VM) as a
            process reward model, VM(problem text, state), and answers with the best-scored
            completion (DESIGN step 8).
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
            raise ValueError("set iteration_limit or time_limit")
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
    """The search tree of one problem; `nodes[i].node_id == i` and `nodes[0]` is the root."""

    domain: str
    problem_id: str
    nodes: list[Node]
    # Values already known for this problem, by program or state text (see the module docstring).
    known: dict[str, float] = field(default_factory=dict, repr=False, compare=False)

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


def best_completion(tree: Tree) -> Completion | None:
    """The stored completion with the highest reward, the first in depth-first node order on a
    tie (as the original's stable sort over its preorder list): the answer of a test-phase
    search. None when nothing has been valued."""
    valued = [c for node in tree.preorder() for c in node.completions if c.reward is not None]
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
    """One problem's search in progress: its formatted prompt, its tree, and its clock (seconds
    charged to it so far, see the module docstring)."""

    problem: Problem
    prompt: str
    tree: Tree
    iterations: int = 0
    seconds: float = 0.0


def call_seed(seed: int, keys: Sequence[ProblemKey], iteration: int) -> int:
    """The generation seed of one call: a hash of (config seed, the (domain, problem_id) keys
    of the call's problems, iteration), < 2**31 so that every backend accepts it."""
    key = json.dumps([seed, [list(k) for k in keys], iteration])
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 2**31


def run_mcts(problems: Sequence[Problem], generator: Generator, tokenizer: Any,
             evaluator: ProgramVerifier | Scorer, config: MCTSConfig | None = None, *,
             clock: Clock = time.perf_counter) -> list[Tree]:
    """Search a tree per problem, all trees in lockstep: one generate call and one verify (train
    phase, `evaluator` is a Verifier) or score (test phase, a Scorer) call per iteration.
    `clock` measures the time limit (a fake clock makes it testable)."""
    config = config or MCTSConfig()
    _check_evaluator(evaluator, config.phase)
    keys = [p.key for p in problems]
    if len(set(keys)) != len(keys):
        raise ValueError("problems must be unique by (domain, problem_id): trees are recorded "
                         "by that key")
    searches = [_Search(p, format_prompt(p, tokenizer), Tree.new(p)) for p in problems]
    iteration = 0
    while active := [s for s in searches if not _limit_reached(config, s)]:
        _iterate(active, generator, evaluator, config, iteration, clock)
        iteration += 1
    return [search.tree for search in searches]


def run_mcts_sequential(problems: Sequence[Problem], generator: Generator, tokenizer: Any,
                        evaluator: ProgramVerifier | Scorer, config: MCTSConfig | None = None,
                        *, clock: Clock = time.perf_counter) -> list[Tree]:
    """The same search, one tree after the other (the baseline that lockstep batching beats)."""
    return [run_mcts([p], generator, tokenizer, evaluator, config, clock=clock)[0]
            for p in problems]


def _limit_reached(config: MCTSConfig, search: _Search) -> bool:
    """The iteration limit when there is one (it wins over the time limit), else the time limit
    on the tree's own clock."""
    if config.iteration_limit is not None:
        return search.iterations >= config.iteration_limit
    return search.seconds >= cast(float, config.time_limit)


def _check_evaluator(evaluator: object, phase: str) -> None:
    needed = "verify" if phase == "train" else "score"
    if not callable(getattr(evaluator, needed, None)):
        kind = "a Verifier" if phase == "train" else "a Scorer"
        raise TypeError(f"the {phase} phase needs {kind} (with .{needed}), "
                        f"got {type(evaluator).__name__}")


def _iterate(searches: Sequence[_Search], generator: Generator,
             evaluator: ProgramVerifier | Scorer, config: MCTSConfig, iteration: int,
             clock: Clock = time.perf_counter) -> None:
    """One iteration on every tree: select, expand (one generate call), value (one verify or
    score call), then rollout and backpropagate; each tree's clock is charged its share."""
    start = clock()
    leaves = [select(search.tree, config) for search in searches]
    visited = [leaf.visits > 0 for leaf in leaves]
    expanding = [i for i, leaf in enumerate(leaves) if not leaf.terminal]
    generate_start = clock()
    samples = _sample([searches[i] for i in expanding], [leaves[i] for i in expanding],
                      generator, config, iteration)
    generate_s = clock() - generate_start
    new_children = {i: expand(searches[i].tree, leaves[i], rows)
                    for i, rows in zip(expanding, samples, strict=True)}

    evaluate_start = clock()
    sent = _value(searches, leaves, visited, new_children, evaluator, config.phase)
    evaluate_s = clock() - evaluate_start

    for i, (search, leaf) in enumerate(zip(searches, leaves, strict=True)):
        if not leaf.terminal:
            hide_extra_children(search.tree, leaf, config.num_decision)
        visits, value = rollout(search.tree, leaf, visited[i], config.phase)
        backpropagate(search.tree, leaf, visits, value)
        search.iterations += 1

    rest_s = clock() - start - generate_s - evaluate_s
    for i, search in enumerate(searches):
        search.seconds += rest_s / len(searches)
        if i in new_children:
            search.seconds += generate_s / len(expanding)
        if sent[i]:
            search.seconds += evaluate_s * sent[i] / sum(sent)


def _sample(searches: Sequence[_Search], leaves: Sequence[Node], generator: Generator,
            config: MCTSConfig, iteration: int) -> list[list[str]]:
    """`num_sample` continuations per leaf, cut at their domain's stops. A leaf's prompt is its
    problem's formatted prompt (ending with the reply prefix, init_code included) followed by
    the leaf's state beyond init_code. One generate call per distinct stop-string set (one call
    unless the batch mixes domains whose stops differ)."""
    by_stops: dict[tuple[str, ...], list[int]] = {}
    for i, search in enumerate(searches):
        by_stops.setdefault(tuple(stop_strings(search.problem.domain)), []).append(i)
    rows: list[list[str]] = [[] for _ in searches]
    for stops, members in by_stops.items():
        prompts = [searches[i].prompt + searches[i].tree.answer(leaves[i].state) for i in members]
        seed = call_seed(config.seed, [searches[i].problem.key for i in members], iteration)
        result = generator.generate(prompts, config.generation_config(stops, seed))
        for i, samples in zip(members, result.samples, strict=True):
            # The backend already cut at the stops; cutting again keeps any generator honest.
            rows[i] = [postprocess(s.text, searches[i].problem.domain)[0] for s in samples]
    return rows


def _value(searches: Sequence[_Search], leaves: Sequence[Node], visited: Sequence[bool],
           new_children: dict[int, list[tuple[Node, int]]], evaluator: ProgramVerifier | Scorer,
           phase: str) -> list[int]:
    """Value every text this iteration needs, across all trees, in one verify or score call;
    then write the values onto completions and (test phase) the new children. Returns how many
    texts each tree sent."""
    pending: list[tuple[int, str]] = []
    for i, (search, leaf) in enumerate(zip(searches, leaves, strict=True)):
        if leaf.terminal:
            texts = [] if visited[i] else [leaf.state]
        else:
            texts = [c.program for c in leaf.completions]
            if phase == "test":
                texts += [child.state for child, _ in new_children[i]]
        pending += [(i, text) for text in dict.fromkeys(texts) if text not in search.tree.known]
    values = _evaluate(evaluator, phase, [(searches[i], t) for i, t in pending]) if pending else []
    sent = [0] * len(searches)
    for (i, text), value in zip(pending, values, strict=True):
        searches[i].tree.known[text] = value
        sent[i] += 1

    for i, (search, leaf) in enumerate(zip(searches, leaves, strict=True)):
        if leaf.terminal:
            continue
        known = search.tree.known
        for completion in leaf.completions:
            completion.reward = known[completion.program]
            completion.verified = phase == "train"
        if phase == "test":
            # The value model acts as a PRM: a new child counts one visit with V = VM(q, state)
            # per sample that chose it.
            for child, count in new_children[i]:
                child.prior = known[child.state]
                child.visits = count
                child.value_sum = count * child.prior
    return sent


def _evaluate(evaluator: ProgramVerifier | Scorer, phase: str,
              pending: Sequence[tuple[_Search, str]]) -> list[float]:
    """The verifier's rewards (train) or the scorer's scores (test) of (search, text) pairs; the
    scorer sees the raw problem text and the full state or program (init_code included)."""
    if phase == "train":
        verifier = cast(ProgramVerifier, evaluator)
        verdicts = verifier.verify([s.problem for s, _ in pending], [text for _, text in pending])
        return [float(verdict.reward) for verdict in verdicts]
    scorer = cast(Scorer, evaluator)
    scores = scorer.score([s.problem.prompt for s, _ in pending], [text for _, text in pending])
    return [float(score) for score in scores]
