"""Monte Carlo tree search over line-level actions (DESIGN.md step 5), batched across problems.

One tree per problem; the tree and the four steps of an iteration (select, expand, rollout,
backpropagate) are in `restrl.search.tree`. This module runs them on many trees at once.

Lockstep batching: `run_mcts` advances every problem's tree by one iteration at a time, so one
iteration costs ONE `generate` call for the selected leaves of all trees (one per stop-string
set when a batch mixes domains with different stops) and ONE verify (or score) call for every
new text across trees. `run_mcts_sequential` runs the same code on one tree after another. With
a generator whose samples depend on the prompt only (scripted, greedy, or seeded per prompt),
both return identical trees: tie-breaking draws depend on the tree alone (`tie_seed`).

The search stops at `iteration_limit` iterations per tree, or, only without one, when the
tree's clock reaches `time_limit`. Time: each tree keeps its own clock, charged with its share
of every iteration it takes part in: the generate calls split over the prompts in them, the
verify/score call split over the texts each tree sent, the rest split evenly. A batch of K
problems thus spends about K x `time_limit` seconds, as K searches one after the other would,
and a tree that stops frees the batch for the others.

Seeds: a generate call of iteration i gets `call_seed(config.seed, keys, i)`, a hash of the
config seed, the (domain, problem_id) keys of the problems whose leaves it expands (in order)
and i. In a sequential search a call holds one problem, so every (problem, iteration) has its
own seed; a lockstep call holds many, so backends that seed per call (transformers, vLLM) draw
other samples in the two modes, by design of those backends, not of the search.

Budget: every tree counts the samples generated for it and the completion tokens the generator
reported for them (`Tree.completions_generated`, `Tree.tokens_generated`, `search_budget`).
With an iteration limit a tree may not exceed iteration_limit x num_sample completions; a
search that does (a generator returning more samples than asked) raises RuntimeError rather
than report a method at a budget it did not keep.

Values are cached per tree: a program (or, in the test phase, a state) is verified or scored
once, and a repeat (the same program sampled again, a terminal child whose state is its
parent's completion) reuses the value; every repeat still counts in the visits and sums.
Verification and scoring are taken to be deterministic, as they are for the test-based domains.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from restrl.generation import Generator
from restrl.problems.model import Problem, ProblemKey
from restrl.prompts import format_prompt, postprocess, stop_strings
from restrl.scoring import Scorer
from restrl.search.config import MCTSConfig
from restrl.search.tree import (
    Node,
    Tree,
    backpropagate,
    expand,
    hide_extra_children,
    rollout,
    select,
)

Clock = Callable[[], float]


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
    for i in expanding:
        _check_budget(searches[i].tree, config)
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
            searches[i].tree.record_samples([s.tokens for s in samples])
            # The backend already cut at the stops; cutting again keeps any generator honest.
            rows[i] = [postprocess(s.text, searches[i].problem.domain)[0] for s in samples]
    return rows


def _check_budget(tree: Tree, config: MCTSConfig) -> None:
    """Raise when a tree got more completions than iteration_limit x num_sample (checked before
    the extra samples enter the tree)."""
    if config.iteration_limit is None:
        return
    budget = config.iteration_limit * config.num_sample
    if tree.completions_generated > budget:
        raise RuntimeError(
            f"{tree.domain}/{tree.problem_id}: the search generated {tree.completions_generated} "
            f"completions, over its budget of {budget} (iteration_limit "
            f"{config.iteration_limit} x num_sample {config.num_sample}); the generator returned "
            f"more than the n={config.num_sample} samples per prompt it was asked for")


def _value(searches: Sequence[_Search], leaves: Sequence[Node], visited: Sequence[bool],
           new_children: dict[int, list[tuple[Node, int]]], evaluator: ProgramVerifier | Scorer,
           phase: str) -> list[int]:
    """Value every text this iteration needs, across all trees, in one verify or score call;
    then write the values onto completions and (test phase) the new children. Returns how many
    texts each tree sent."""
    pending: list[tuple[int, str, bool]] = []  # (tree, text, whether it is a whole program)
    for i, (search, leaf) in enumerate(zip(searches, leaves, strict=True)):
        if leaf.terminal:
            texts = {} if visited[i] else {leaf.state: True}
        else:
            texts = {c.program: True for c in leaf.completions}
            if phase == "test":
                for child, _ in new_children[i]:
                    texts.setdefault(child.state, child.terminal)
        pending += [(i, text, whole) for text, whole in texts.items()
                    if text not in search.tree.known]
    values = _evaluate(evaluator, phase, [(searches[i], t, w) for i, t, w in pending]) \
        if pending else []
    sent = [0] * len(searches)
    for (i, text, _), value in zip(pending, values, strict=True):
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
              pending: Sequence[tuple[_Search, str, bool]]) -> list[float]:
    """The verifier's rewards (train) or the scorer's scores (test) of (search, text, whole)
    triples; the scorer sees the raw problem text and the full state or program (init_code
    included). A scorer with `score_states` (the oracle) is also told which texts are whole
    programs (completions, terminal states) and which are partial states."""
    problems = [s.problem for s, _, _ in pending]
    texts = [text for _, text, _ in pending]
    if phase == "train":
        verdicts = cast(ProgramVerifier, evaluator).verify(problems, texts)
        return [float(verdict.reward) for verdict in verdicts]
    questions = [p.prompt for p in problems]
    if hasattr(evaluator, "score_states"):
        scores = evaluator.score_states(questions, texts, [w for _, _, w in pending])
    else:
        scores = cast(Scorer, evaluator).score(questions, texts)
    return [float(score) for score in scores]
