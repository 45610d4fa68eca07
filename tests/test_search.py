"""MCTS (restrl.search): hand-computed trees with a scripted generator, verifier and scorer."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from restrl.generation import GenerationConfig, GenerationResult, Sample
from restrl.problems.model import Problem
from restrl.prompts import format_prompt
from restrl.search import (
    MCTSConfig,
    Tree,
    best_completion,
    call_seed,
    run_mcts,
    run_mcts_sequential,
    split_action,
    tables_to_trees,
    trees_to_tables,
    value_data,
)
from restrl.search.mcts import _iterate, _Search

FENCE = "```python\n"
INIT = "def f(x):\n"


class ScriptedGenerator:
    """Returns fixed samples per state: the text after the prompt's last "```python\\n" fence
    (init_code + the node's actions). A script entry shorter than n repeats its last sample."""

    def __init__(self, script: dict[str, list[str]], delay: float = 0.0) -> None:
        self.script = script
        self.delay = delay
        self.calls: list[tuple[list[str], GenerationConfig]] = []

    def generate(self, prompts: Sequence[str], config: GenerationConfig | None = None,
                 **overrides: Any) -> GenerationResult:
        config = (config or GenerationConfig()).with_overrides(**overrides)
        self.calls.append((list(prompts), config))
        time.sleep(self.delay)
        rows = []
        for prompt in prompts:
            texts = self.script[prompt.rsplit(FENCE, 1)[1]]
            texts = [texts[min(j, len(texts) - 1)] for j in range(config.n)]
            rows.append([Sample(text, len(text), "stop") for text in texts])
        return GenerationResult(rows)

    def close(self) -> None:
        pass


class ReferenceGenerator(ScriptedGenerator):
    """Continues every state with the rest of its problem's reference program."""

    def __init__(self, references: Sequence[str]) -> None:
        super().__init__({})
        self.references = references

    def generate(self, prompts: Sequence[str], config: GenerationConfig | None = None,
                 **overrides: Any) -> GenerationResult:
        for prompt in prompts:
            state = prompt.rsplit(FENCE, 1)[1]
            reference = next(r for r in self.references if r.startswith(state))
            self.script[state] = [reference[len(state):]]
        return super().generate(prompts, config, **overrides)


@dataclass(frozen=True)
class Reward:
    reward: float


class ScriptedVerifier:
    """Reward by program text (0 for any other program); records each call's programs."""

    def __init__(self, rewards: dict[str, float]) -> None:
        self.rewards = rewards
        self.calls: list[list[str]] = []

    def verify(self, problems: Sequence[Problem], programs: Sequence[str]) -> list[Reward]:
        assert len(problems) == len(programs)
        self.calls.append(list(programs))
        return [Reward(self.rewards.get(program, 0.0)) for program in programs]


class ScriptedScorer:
    """Score by answer text (0 for any other answer); records each call's answers."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        self.calls: list[list[str]] = []

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        assert all(prompt.endswith(FENCE + INIT) for prompt in prompts)
        self.calls.append(list(answers))
        return [self.scores.get(answer, 0.0) for answer in answers]


def problem(problem_id: str = "p", init_code: str = INIT) -> Problem:
    return Problem(problem_id=problem_id, domain="toy", prompt="Write f.", init_code=init_code,
                   tests="")


def config(**overrides: Any) -> MCTSConfig:
    base: dict[str, Any] = {"iteration_limit": 5, "num_sample": 4, "num_decision": 2,
                            "exploration_constant": 0.2, "eps": 0.1}
    return MCTSConfig(**{**base, **overrides})


def stats(tree: Tree) -> list[tuple[str, int, float, bool, bool, bool]]:
    return [(n.action, n.visits, round(n.value_sum, 9), n.visible, n.terminal, n.expanded)
            for n in tree.nodes]


# The train-phase tree every hand computation below refers to.
A, B, RET0 = "    a = 1\n", "    b = 2\n", "    return 0\n"
P1 = INIT + A + "    return a\n"          # reward 1.0
P2 = INIT + A + "    return 2\n"          # reward 0.0
P3 = INIT + B + "    return b\n"          # reward 0.5
P4 = INIT + RET0                          # reward 0.0
P5 = INIT + A + "    return a + 0\n"      # reward 1.0
TRAIN_SCRIPT = {
    INIT: ["    a = 1\n    return a\n", "    a = 1\n    return 2\n", "    b = 2\n    return b\n",
           RET0],
    INIT + A: ["    return a\n", "    return a\n", "    return 2\n", "    return a + 0\n"],
    INIT + B: ["    return b\n"],
}
TRAIN_REWARDS = {P1: 1.0, P2: 0.0, P3: 0.5, P4: 0.0, P5: 1.0}


def train_tree(iterations: int = 5) -> tuple[Tree, ScriptedGenerator, ScriptedVerifier]:
    generator, verifier = ScriptedGenerator(TRAIN_SCRIPT), ScriptedVerifier(TRAIN_REWARDS)
    [tree] = run_mcts([problem()], generator, None, verifier, config(iteration_limit=iterations))
    return tree, generator, verifier


# ----------------------------------------------------------------------------- actions


@pytest.mark.parametrize(("sample", "finished", "expected"), [
    ("    y = x\n    return y\n", True, ("    y = x\n", False)),
    ("    return x\n", True, ("    return x\n", True)),       # finished within its first line
    ("    return x\n\n  ", True, ("    return x\n\n  ", True)),  # only whitespace after it
    ("    return x\n", False, ("    return x\n", False)),     # cut by max_tokens at a newline
    ("    return x", False, ("    return x", True)),          # no newline: the whole sample
    ("", True, ("", True)),
])
def test_split_action_takes_the_first_line_or_the_whole_terminal_sample(sample, finished,
                                                                        expected):
    assert split_action(sample, finished) == expected


# ----------------------------------------------------------------------------- train phase


def test_train_tree_matches_hand_computed_visits_values_and_visibility():
    tree, generator, verifier = train_tree(iterations=5)
    # it 0: expand root: children A (2 samples), B, terminal "return 0"; 4 distinct programs,
    #       rewards 1+0+0.5+0 -> root (4, 1.5). num_decision=2 hides the third child (ties at V=0
    #       keep sample order).
    # it 1: A and B tie (n=0) -> A. Samples give terminal children "return a" (twice), "return 2",
    #       "return a + 0" (hidden); 3 distinct programs P1, P2, P5 -> A (3, 2.0), root (7, 3.5).
    # it 2: root N=7: UCT(A) = 2/3 + 0.2*sqrt(2.946/3.1) = 0.862 < UCT(B) = 0.2*sqrt(2.946/0.1)
    #       = 1.086 -> expand B: one program P3 (0.5) -> B (1, 0.5), root (8, 4.0).
    # it 3: root N=8: UCT(A) = 0.667 + 0.2*sqrt(3.079/3.1) = 0.866 > UCT(B) = 0.5 + 0.2*
    #       sqrt(3.079/1.1) = 0.835 -> A; its unvisited children tie -> terminal "return a":
    #       rollout (1, 1.0) -> A (4, 3.0), root (9, 5.0).
    # it 4: root N=9: UCT(A) = 0.75 + 0.2*sqrt(3.197/4.1) = 0.927 > UCT(B) = 0.841 -> A;
    #       UCT("return a") = 1 + 0.2*sqrt(2.386/1.1) = 1.295 > UCT("return 2") = 0.977 ->
    #       "return a" again -> (2, 2.0); A (5, 4.0); root (10, 6.0).
    assert stats(tree) == [
        ("", 10, 6.0, True, False, True),
        (A, 5, 4.0, True, False, True),
        (B, 1, 0.5, True, False, True),
        (RET0, 0, 0.0, False, True, False),
        ("    return a\n", 2, 2.0, True, True, False),
        ("    return 2\n", 0, 0.0, True, True, False),
        ("    return a + 0\n", 0, 0.0, False, True, False),
        ("    return b\n", 0, 0.0, True, True, False),
    ]
    assert [n.parent_id for n in tree.nodes] == [-1, 0, 0, 0, 1, 1, 1, 2]
    assert [n.depth for n in tree.nodes] == [0, 1, 1, 1, 2, 2, 2, 2]
    assert tree.nodes[4].state == P1 and tree.nodes[4].value == 1.0
    assert math.isclose(tree.root.value, 0.6)
    # Three expansions -> three generate calls; terminal selections need none.
    assert len(generator.calls) == 3
    # Each program is verified once per tree: P1 and P2 reappear at A, P3 at B.
    assert verifier.calls == [[P1, P2, P3, P4], [P5]]


def test_duplicate_samples_merge_into_one_child_and_one_completion():
    tree, _, _ = train_tree(iterations=3)
    a_node = tree.nodes[1]
    assert [tree.nodes[i].action for i in tree.root.children] == [A, B, RET0]
    # A's four samples hold three distinct actions and three distinct programs.
    assert [c.action for c in tree.children(a_node)] == [
        "    return a\n", "    return 2\n", "    return a + 0\n"]
    assert [(c.program, c.reward, c.verified) for c in a_node.completions] == [
        (P1, 1.0, True), (P2, 0.0, True), (P5, 1.0, True)]
    # B's four identical samples: one child, one completion, one visit.
    b_node = tree.nodes[2]
    assert len(b_node.children) == 1 and len(b_node.completions) == 1 and b_node.visits == 1


def test_num_decision_limits_the_visible_children():
    generator, verifier = ScriptedGenerator(TRAIN_SCRIPT), ScriptedVerifier(TRAIN_REWARDS)
    [tree] = run_mcts([problem()], generator, None, verifier,
                      config(iteration_limit=1, num_decision=3))
    assert [c.visible for c in tree.children(tree.root)] == [True, True, True]
    [tree] = run_mcts([problem()], generator, None, verifier,
                      config(iteration_limit=1, num_decision=1))
    assert [c.visible for c in tree.children(tree.root)] == [True, False, False]


def test_a_terminal_leaf_is_valued_not_expanded():
    script = {INIT: ["    return x\n"]}  # every sample ends the program at once
    generator, verifier = ScriptedGenerator(script), ScriptedVerifier({INIT + "    return x\n": 1})
    [tree] = run_mcts([problem()], generator, None, verifier, config(iteration_limit=4))
    assert len(generator.calls) == 1  # iterations 1-3 select the terminal child
    assert len(tree.nodes) == 2
    child = tree.nodes[1]
    assert child.terminal and not child.expanded and child.state == INIT + "    return x\n"
    assert (child.visits, child.value_sum) == (3, 3.0)
    assert (tree.root.visits, tree.root.value_sum) == (4, 4.0)


def test_a_merged_action_stays_expandable_when_some_sample_continues():
    script = {INIT: ["    y = x\n", "    y = x\n    return y\n"],
              INIT + "    y = x\n": ["    return y\n"]}
    generator, verifier = ScriptedGenerator(script), ScriptedVerifier({})
    [tree] = run_mcts([problem()], generator, None, verifier,
                      config(iteration_limit=2, num_sample=2))
    child = tree.nodes[1]
    assert not child.terminal and child.expanded


def test_iteration_limit_bounds_the_expansions():
    script = {INIT + "    x += 1\n" * k: ["    x += 1\n    x += 1\n"] for k in range(10)}
    generator, verifier = ScriptedGenerator(script), ScriptedVerifier({})
    [tree] = run_mcts([problem()], generator, None, verifier, config(iteration_limit=6))
    assert len(generator.calls) == 6
    assert sum(n.expanded for n in tree.nodes) == 6 and tree.nodes[-1].depth == 6


def test_time_limit_stops_the_search():
    script = {INIT + "    x += 1\n" * k: ["    x += 1\n    x += 1\n"] for k in range(200)}
    generator, verifier = ScriptedGenerator(script, delay=0.02), ScriptedVerifier({})
    start = time.monotonic()
    run_mcts([problem()], generator, None, verifier, config(iteration_limit=None, time_limit=0.1))
    assert time.monotonic() - start < 1.0
    assert 1 <= len(generator.calls) <= 6
    with pytest.raises(ValueError, match="iteration_limit or time_limit"):
        MCTSConfig(iteration_limit=None, time_limit=None)


def test_the_phase_checks_its_evaluator():
    with pytest.raises(TypeError, match="needs a Verifier"):
        run_mcts([problem()], ScriptedGenerator({}), None, ScriptedScorer({}), config())
    with pytest.raises(TypeError, match="needs a Scorer"):
        run_mcts([problem()], ScriptedGenerator({}), None, ScriptedVerifier({}),
                 MCTSConfig.test_phase())


# ----------------------------------------------------------------------------- test phase


TEST_SCRIPT = {
    INIT: [RET0, "    a = 1\n    return a\n", "    a = 1\n    return 2\n"],
    INIT + A: ["    return a\n"],
}
TEST_SCORES = {A: 0.6, RET0: 0.2, A + "    return a\n": 0.9, A + "    return 2\n": 0.3}


def test_test_phase_scores_nodes_as_a_prm_and_answers_with_the_best_completion():
    generator, scorer = ScriptedGenerator(TEST_SCRIPT), ScriptedScorer(TEST_SCORES)
    cfg = MCTSConfig.test_phase(iteration_limit=2, num_sample=3, num_decision=1)
    assert cfg.exploration_constant == 0.1
    [tree] = run_mcts([problem()], generator, None, scorer, cfg)
    # it 0: children "return 0" (prior 0.2, 1 sample) and A (prior 0.6, 2 samples: 2 visits);
    #       num_decision=1 keeps A, the better prior, although it came second. Root gets the
    #       children's visits and values: (3, 1.4).
    # it 1: A is expanded: one terminal child (3 samples) whose state is P1, prior 0.9 (already
    #       scored as a completion) -> (3, 2.7); A (5, 3.9), root (6, 4.1).
    summary = [(n.action, n.prior, n.visits, round(n.value_sum, 9), n.visible) for n in tree.nodes]
    assert summary == [
        ("", None, 6, 4.1, True),
        (RET0, 0.2, 1, 0.2, False),
        (A, 0.6, 5, 3.9, True),
        ("    return a\n", 0.9, 3, 2.7, True),
    ]
    # One score call per iteration; the second needed nothing new.
    assert scorer.calls == [[RET0, A + "    return a\n", A + "    return 2\n", A]]
    best = best_completion(tree)
    assert best is not None and best.program == P1 and best.reward == 0.9 and not best.verified


# ----------------------------------------------------------------------------- batching


def two_problem_script() -> tuple[list[Problem], dict[str, list[str]], dict[str, float]]:
    g = "def g(x):\n"
    script = dict(TRAIN_SCRIPT)
    script |= {g: ["    return 1\n", "    y = 2\n    return y\n"],
               g + "    y = 2\n": ["    return y\n", "    return 3\n"]}
    rewards = TRAIN_REWARDS | {g + "    y = 2\n    return y\n": 1.0}
    return [problem("p"), problem("q", g)], script, rewards


def test_lockstep_and_sequential_give_identical_trees():
    problems, script, rewards = two_problem_script()
    lock_gen, seq_gen = ScriptedGenerator(script), ScriptedGenerator(script)
    lock_ver, seq_ver = ScriptedVerifier(rewards), ScriptedVerifier(rewards)
    lockstep = run_mcts(problems, lock_gen, None, lock_ver, config(iteration_limit=5))
    sequential = run_mcts_sequential(problems, seq_gen, None, seq_ver, config(iteration_limit=5))
    assert [stats(t) for t in lockstep] == [stats(t) for t in sequential]
    assert trees_to_tables(lockstep) == trees_to_tables(sequential)
    # Lockstep: one generate and at most one verify call per iteration for both trees.
    assert len(lock_gen.calls) <= 5 and len(lock_ver.calls) <= 5
    assert len(seq_gen.calls) > len(lock_gen.calls)
    assert max(len(prompts) for prompts, _ in lock_gen.calls) == 2


def test_generate_calls_carry_derived_seeds_and_the_config():
    problems, script, rewards = two_problem_script()
    generator = ScriptedGenerator(script)
    run_mcts(problems, generator, None, ScriptedVerifier(rewards),
             config(iteration_limit=1, seed=7, temperature=0.5, max_tokens=64))
    [(prompts, cfg)] = generator.calls
    assert cfg.seed == call_seed(7, ["p", "q"], 0) != call_seed(7, ["p"], 0)
    assert (cfg.n, cfg.temperature, cfg.max_tokens, cfg.stop) == (4, 0.5, 64, ("```",))
    assert prompts[0] == format_prompt(problems[0], None)
    assert call_seed(7, ["p"], 0) == call_seed(7, ["p"], 0) != call_seed(7, ["p"], 1)


# ----------------------------------------------------------------------------- tables


def test_tables_round_trip_through_parquet(tmp_path: Path):
    trees = [train_tree()[0]]
    generator, scorer = ScriptedGenerator(TEST_SCRIPT), ScriptedScorer(TEST_SCORES)
    trees += run_mcts([problem("t")], generator, None, scorer,
                      MCTSConfig.test_phase(iteration_limit=2, num_sample=3, num_decision=1))
    nodes, completions = trees_to_tables(trees)
    pq.write_table(nodes, tmp_path / "nodes.parquet")
    pq.write_table(completions, tmp_path / "completions.parquet")
    back = tables_to_trees(pq.read_table(tmp_path / "nodes.parquet"),
                           pq.read_table(tmp_path / "completions.parquet"))
    assert back == trees
    assert [t.known for t in back] == [t.known for t in trees]
    assert nodes.num_rows == 12 and completions.num_rows == 4 + 3 + 1 + 3 + 1
    row = completions.to_pylist()[0]
    assert row["answer"] == P1[len(INIT):] and row["program"] == P1
    assert nodes.column("value").to_pylist()[0] == pytest.approx(0.6)


def test_a_tree_read_back_searches_on_like_the_original():
    tree, _, _ = train_tree(iterations=3)
    [copy] = tables_to_trees(*trees_to_tables([tree]))
    # Continue both by driving run_mcts's iteration on each.
    for t in (tree, copy):
        search = _Search(problem(), format_prompt(problem(), None), t)
        verifier = ScriptedVerifier(TRAIN_REWARDS)
        for iteration in (3, 4):
            _iterate([search], ScriptedGenerator(TRAIN_SCRIPT), verifier, config(), iteration)
        assert verifier.calls == []  # every value it needs is cached, in the copy too
    assert copy == tree == train_tree(iterations=5)[0]


def test_value_data_has_terminal_and_intermediate_rows():
    tree, _, _ = train_tree()
    table = value_data([tree], [problem()], None)
    prompt = format_prompt(problem(), None)
    rows = {(r["answer"], r["source"]): r["reward"] for r in table.to_pylist()}
    assert set(table.column("prompt").to_pylist()) == {prompt}
    assert set(table.column("problem_id").to_pylist()) == {"p"}
    # Terminal: the 5 distinct verified programs (P1, P2 stored on root and A: one row each).
    assert {a for a, s in rows if s == "terminal"} == {
        p[len(INIT):] for p in (P1, P2, P3, P4, P5)}
    # Intermediate: the expanded nodes root, A, B with their mean values.
    assert {a: r for (a, s), r in rows.items() if s == "intermediate"} == {
        "": 0.6, A: 0.8, B: 0.5}
    assert table.num_rows == 8


def test_value_data_averages_duplicate_rows():
    tree, _, _ = train_tree(iterations=2)
    tree.nodes[1].completions[0].reward = 0.0  # P1 on A now disagrees with P1 on the root (1.0)
    rows = value_data([tree], [problem()], None).to_pylist()
    [p1] = [r for r in rows if r["answer"] == P1[len(INIT):]]
    assert p1["reward"] == 0.5 and p1["source"] == "terminal"


# ----------------------------------------------------------------------------- real sandbox


def test_search_with_the_real_verifier_on_a_toy_problem():
    from restrl.sandbox import Verifier
    from restrl.toy import toy_problems

    toy = toy_problems("train", n=1)[0]
    reference = toy.meta["reference"]
    generator = ReferenceGenerator([reference])
    with Verifier(workers=1) as verifier:
        [tree] = run_mcts([toy], generator, None, verifier,
                          config(iteration_limit=3, num_sample=2))
    lines = reference[len(toy.init_code):].splitlines(keepends=True)
    # Each expansion adds the next reference line; the reference passes every test.
    assert [n.action for n in tree.nodes] == ["", *lines[:3]]
    assert all(c.program == reference and c.reward == 1.0 and c.verified
               for n in tree.nodes for c in n.completions)
    assert (tree.root.visits, tree.root.value) == (3, 1.0)
