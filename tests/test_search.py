"""MCTS (restrl.search): hand-computed trees with a scripted generator, verifier and scorer."""

from __future__ import annotations

import dataclasses
import math
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
    VALUE_DATA,
    MCTSConfig,
    Tree,
    best_completion,
    call_seed,
    run_mcts,
    run_mcts_sequential,
    search_budget,
    split_action,
    tables_to_trees,
    trees_to_tables,
    value_data,
)
from restrl.search.mcts import _iterate, _Search

FENCE = "```python\n"
INIT = "def f(x):\n"
QUESTION = "Write f."


class FakeClock:
    """A clock that only moves when told to (the generator advances it)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedGenerator:
    """Returns fixed samples per state: the longest script key the prompt ends with (a prompt
    ends with the node's state). A script entry shorter than n repeats its last sample.
    `clock`/`seconds`: a fake clock to advance by `seconds` per call."""

    def __init__(self, script: dict[str, list[str]], clock: FakeClock | None = None,
                 seconds: float = 0.0) -> None:
        self.script = script
        self.clock, self.seconds = clock, seconds
        self.calls: list[tuple[list[str], GenerationConfig]] = []

    def generate(self, prompts: Sequence[str], config: GenerationConfig | None = None,
                 **overrides: Any) -> GenerationResult:
        config = (config or GenerationConfig()).with_overrides(**overrides)
        self.calls.append((list(prompts), config))
        if self.clock is not None:
            self.clock.now += self.seconds
        rows = []
        for prompt in prompts:
            state = max((k for k in self.script if prompt.endswith(k)), key=len)
            texts = self.script[state]
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
    """Score by (question, answer) text (0 for any other answer); records each call."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores
        self.calls: list[list[str]] = []
        self.questions: list[str] = []

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> list[float]:
        self.questions += questions
        self.calls.append(list(answers))
        return [self.scores.get(answer, 0.0) for answer in answers]


def problem(problem_id: str = "p", init_code: str = INIT, domain: str = "toy") -> Problem:
    return Problem(problem_id=problem_id, domain=domain, prompt=QUESTION, init_code=init_code,
                   tests="")


def config(**overrides: Any) -> MCTSConfig:
    base: dict[str, Any] = {"iteration_limit": 5, "num_sample": 4, "num_decision": 2,
                            "exploration_constant": 0.2, "eps": 0.1, "seed": 3}
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
    INIT + B: ["    return b"],       # no trailing newline: the completion gets one
}
TRAIN_REWARDS = {P1: 1.0, P2: 0.0, P3: 0.5, P4: 0.0, P5: 1.0}


def train_tree(iterations: int = 5, **overrides: Any
               ) -> tuple[Tree, ScriptedGenerator, ScriptedVerifier]:
    generator, verifier = ScriptedGenerator(TRAIN_SCRIPT), ScriptedVerifier(TRAIN_REWARDS)
    [tree] = run_mcts([problem()], generator, None, verifier,
                      config(iteration_limit=iterations, **overrides))
    return tree, generator, verifier


# ----------------------------------------------------------------------------- actions


@pytest.mark.parametrize(("sample", "expected"), [
    ("    y = x\n    return y\n", ("    y = x\n", False)),
    ("    y = x\n    ret", ("    y = x\n", False)),           # cut mid-line: still continues
    ("    return x\n", ("    return x\n", True)),             # nothing after its first line
    ("    return x\n\n  \n", ("    return x\n", True)),       # only whitespace after it
    ("    return x", ("    return x\n", True)),               # no newline: gets one
    ("", ("\n", True)),
])
def test_split_action_rstrips_and_takes_the_first_line_or_the_whole_terminal_sample(sample,
                                                                                   expected):
    assert split_action(sample) == expected


# ----------------------------------------------------------------------------- train phase


def test_train_tree_matches_hand_computed_visits_values_and_visibility():
    tree, generator, verifier = train_tree(iterations=5)
    # Seed 3 breaks the two ties below towards the first child; other seeds may not.
    # it 0: expand root: children A (2 samples), B, terminal "return 0"; 4 completions P1-P4,
    #       rewards 1+0+0.5+0 -> root (4, 1.5). num_decision=2 hides the third child (ties at V=0
    #       keep sample order).
    # it 1: A and B tie (n=0) -> A (seed 3). Samples give terminal children "return a" (twice),
    #       "return 2", "return a + 0" (hidden); 4 completions P1, P1, P2, P5 -> A (4, 3.0),
    #       root (8, 4.5).
    # it 2: root N=8: UCT(A) = 0.75 + 0.2*sqrt(3.079/4.1) = 0.923 < UCT(B) = 0.2*sqrt(3.079/0.1)
    #       = 1.110 -> expand B: four samples of P3 (0.5 each) -> B (4, 2.0), root (12, 6.5).
    # it 3: root N=12: UCT(A) = 0.75 + 0.2*sqrt(3.485/4.1) = 0.934 > UCT(B) = 0.684 -> A; its
    #       unvisited children tie -> "return a" (seed 3), terminal and unvisited: one visit
    #       with its reward (1, 1.0) -> A (5, 4.0), root (13, 7.5).
    # it 4: root N=13: UCT(A) = 0.8 + 0.2*sqrt(3.565/5.1) = 0.967 > UCT(B) = 0.686 -> A;
    #       UCT("return a") = 1 + 0.2*sqrt(2.609/1.1) = 1.308 > UCT("return 2") = 1.022 ->
    #       "return a" again, now visited: one visit with its V -> (2, 2.0); A (6, 5.0);
    #       root (14, 8.5).
    assert stats(tree) == [
        ("", 14, 8.5, True, False, True),
        (A, 6, 5.0, True, False, True),
        (B, 4, 2.0, True, False, True),
        (RET0, 0, 0.0, False, True, False),
        ("    return a\n", 2, 2.0, True, True, False),
        ("    return 2\n", 0, 0.0, True, True, False),
        ("    return a + 0\n", 0, 0.0, False, True, False),
        ("    return b\n", 0, 0.0, True, True, False),
    ]
    assert [n.parent_id for n in tree.nodes] == [-1, 0, 0, 0, 1, 1, 1, 2]
    assert [n.depth for n in tree.nodes] == [0, 1, 1, 1, 2, 2, 2, 2]
    assert tree.nodes[4].state == P1 and tree.nodes[4].value == 1.0
    assert math.isclose(tree.root.value, 8.5 / 14)
    # Three expansions -> three generate calls; terminal selections need none.
    assert len(generator.calls) == 3
    # The verifier cache: each distinct program is verified once per tree.
    assert verifier.calls == [[P1, P2, P3, P4], [P5]]


def test_every_sample_is_a_stored_completion_duplicates_included():
    tree, _, _ = train_tree(iterations=3)
    a_node, b_node = tree.nodes[1], tree.nodes[2]
    assert [c.program for c in tree.root.completions] == [P1, P2, P3, P4]
    assert [(c.program, c.reward, c.verified) for c in a_node.completions] == [
        (P1, 1.0, True), (P1, 1.0, True), (P2, 0.0, True), (P5, 1.0, True)]
    # B's four identical samples (no trailing newline): one child, four completions
    # state + sample.rstrip() + "\n".
    assert len(b_node.children) == 1 and [c.program for c in b_node.completions] == [P3] * 4


def test_train_rollout_counts_every_sample_not_distinct_programs():
    tree, _, _ = train_tree(iterations=3)
    # A: 4 samples, 3 distinct programs -> 4 visits, P1's reward counted twice.
    assert (tree.nodes[1].visits, tree.nodes[1].value_sum) == (4, 3.0)
    # B: 4 samples of one program -> 4 visits with 0.5 each.
    assert (tree.nodes[2].visits, tree.nodes[2].value_sum) == (4, 2.0)


def test_a_merged_action_keeps_the_first_samples_terminal_flag():
    y = "    y = x\n"
    script = {INIT + y: ["    return y\n"]}
    for first, second, terminal in [(y, y + "    return y\n", True),
                                    (y + "    return y\n", y, False)]:
        generator = ScriptedGenerator({**script, INIT: [first, second]})
        [tree] = run_mcts([problem()], generator, None, ScriptedVerifier({}),
                          config(iteration_limit=2, num_sample=2))
        child = tree.nodes[1]
        assert len(tree.root.children) == 1 and child.action == y
        assert child.terminal is terminal and child.expanded is not terminal


def test_num_decision_limits_the_visible_children():
    generator, verifier = ScriptedGenerator(TRAIN_SCRIPT), ScriptedVerifier(TRAIN_REWARDS)
    [tree] = run_mcts([problem()], generator, None, verifier,
                      config(iteration_limit=1, num_decision=3))
    assert [c.visible for c in tree.children(tree.root)] == [True, True, True]
    [tree] = run_mcts([problem()], generator, None, verifier,
                      config(iteration_limit=1, num_decision=1))
    assert [c.visible for c in tree.children(tree.root)] == [True, False, False]


def test_a_terminal_leaf_adds_its_reward_once_then_its_value():
    ret = "    return x\n"
    generator = ScriptedGenerator({INIT: [ret]})  # every sample ends the program at once
    verifier = ScriptedVerifier({INIT + ret: 1.0})
    [tree] = run_mcts([problem()], generator, None, verifier,
                      config(iteration_limit=2, num_sample=2))
    child = tree.nodes[1]
    assert child.terminal and not child.expanded and child.state == INIT + ret
    # it 1: unvisited (V = 0): one visit with its reward, from the cache (the parent's
    # completion is the same program).
    assert (child.visits, child.value_sum) == (1, 1.0) and verifier.calls == [[INIT + ret]]
    # Once visited, one visit with V, whatever the verifier would now say.
    tree.known[child.state] = 0.25
    search = _Search(problem(), format_prompt(problem(), None), tree)
    _iterate([search], generator, verifier, config(num_sample=2), 2)
    assert (child.visits, child.value_sum) == (2, 2.0)
    assert (tree.root.visits, tree.root.value_sum) == (4, 4.0)
    assert len(generator.calls) == 1 and len(verifier.calls) == 1


def test_ties_in_uct_are_broken_at_random_reproducibly_per_seed():
    first = {}
    for seed in range(8):
        tree, _, _ = train_tree(iterations=2, seed=seed)
        first[seed] = next(n.action for n in tree.nodes[1:] if n.expanded)
        assert stats(train_tree(iterations=2, seed=seed)[0]) == stats(tree)
    assert set(first.values()) == {A, B}  # A and B tie after the root's expansion


def test_iteration_limit_bounds_the_expansions():
    script = {INIT + "    x += 1\n" * k: ["    x += 1\n    x += 1\n"] for k in range(10)}
    generator, verifier = ScriptedGenerator(script), ScriptedVerifier({})
    [tree] = run_mcts([problem()], generator, None, verifier, config(iteration_limit=6))
    assert len(generator.calls) == 6
    assert sum(n.expanded for n in tree.nodes) == 6 and tree.nodes[-1].depth == 6


CHAIN = {INIT + "    x += 1\n" * k: ["    x += 1\n    x += 1\n"] for k in range(30)}
G = "def g(x):\n"
CHAIN_G = {G + "    x += 1\n" * k: ["    x += 1\n    x += 1\n"] for k in range(30)}


def test_iteration_limit_wins_over_the_time_limit():
    clock = FakeClock()
    generator = ScriptedGenerator(CHAIN, clock, seconds=1.0)
    run_mcts([problem()], generator, None, ScriptedVerifier({}),
             config(iteration_limit=3, time_limit=0.5), clock=clock)
    assert len(generator.calls) == 3
    with pytest.raises(ValueError, match="iteration_limit or time_limit"):
        MCTSConfig(iteration_limit=None, time_limit=None)



def test_mcts_config_documents_every_field_and_defaults_to_the_seeds_flags():
    from restrl.configs import undocumented

    assert undocumented(MCTSConfig) == []
    cfg = MCTSConfig()
    assert (cfg.iteration_limit, cfg.num_sample, cfg.num_decision, cfg.exploration_constant,
            cfg.eps, cfg.phase, cfg.shard_problems) == (100, 5, 5, 0.2, 0.1, "train", 8)
    with pytest.raises(ValueError, match="shard_problems"):
        MCTSConfig(shard_problems=0)
    with pytest.raises(ValueError, match="phase"):
        MCTSConfig(phase="eval")  # type: ignore[arg-type]


def test_toy_mcts_constructors_hold_the_toy_preset_values():
    toy = MCTSConfig.toy()
    assert (toy.iteration_limit, toy.num_sample, toy.num_decision, toy.temperature,
            toy.max_tokens, toy.phase) == (6, 4, 3, 1.0, 96, "train")
    # The evaluation's default test phase (15 iterations, 5 samples, 5 decisions), cut down.
    evaluation = MCTSConfig.test_phase(iteration_limit=15, num_sample=5, num_decision=5)
    toy_test = MCTSConfig.toy_test_phase()
    assert toy_test == dataclasses.replace(evaluation, iteration_limit=2, num_sample=4,
                                           temperature=0.7, max_tokens=96)

def test_time_limit_is_per_problem_on_each_trees_own_clock():
    problems = [problem("p"), problem("q", G)]
    cfg = config(iteration_limit=None, time_limit=2.0)
    # Sequential: each call (1 s) is one tree's; 2 iterations per tree.
    clock = FakeClock()
    generator = ScriptedGenerator(CHAIN | CHAIN_G, clock, seconds=1.0)
    trees = run_mcts_sequential(problems, generator, None, ScriptedVerifier({}), cfg, clock=clock)
    assert [sum(n.expanded for n in t.nodes) for t in trees] == [2, 2]
    # Lockstep: each call serves both trees, so each is charged half of it: 4 iterations each,
    # the same 4 s in all as the sequential search.
    clock = FakeClock()
    generator = ScriptedGenerator(CHAIN | CHAIN_G, clock, seconds=1.0)
    trees = run_mcts(problems, generator, None, ScriptedVerifier({}), cfg, clock=clock)
    assert [sum(n.expanded for n in t.nodes) for t in trees] == [4, 4]
    assert [len(prompts) for prompts, _ in generator.calls] == [2, 2, 2, 2]
    assert clock.now == 4.0


def test_a_tree_out_of_time_leaves_the_batch_to_the_others():
    # Verification costs 1 s per program; p sends two new programs per iteration, q one: of
    # each 3 s verify call, p is charged 2 s and q 1 s.
    class ClockedVerifier(ScriptedVerifier):
        def verify(self, problems: Sequence[Problem], programs: Sequence[str]) -> list[Reward]:
            clock.now += len(programs)
            return super().verify(problems, programs)

    step = "    x += 1\n"
    script = {INIT + step * k: [step + "    x += 1\n", step + "    x += 2\n"] for k in range(9)}
    script |= {G + step * k: [step + "    x += 1\n"] for k in range(9)}
    clock = FakeClock()
    generator = ScriptedGenerator(script)
    trees = run_mcts([problem("p"), problem("q", G)], generator, None, ClockedVerifier({}),
                     config(iteration_limit=None, time_limit=4.0, num_sample=2), clock=clock)
    assert [sum(n.expanded for n in t.nodes) for t in trees] == [2, 4]
    assert [len(prompts) for prompts, _ in generator.calls] == [2, 2, 1, 1]


def test_the_phase_checks_its_evaluator():
    with pytest.raises(TypeError, match="needs a Verifier"):
        run_mcts([problem()], ScriptedGenerator({}), None, ScriptedScorer({}), config())
    with pytest.raises(TypeError, match="needs a Scorer"):
        run_mcts([problem()], ScriptedGenerator({}), None, ScriptedVerifier({}),
                 MCTSConfig.test_phase())


# ----------------------------------------------------------------------------- budget


class GreedyGenerator(ScriptedGenerator):
    """Returns one sample more per prompt than the call asks for."""

    def generate(self, prompts: Sequence[str], config: GenerationConfig | None = None,
                 **overrides: Any) -> GenerationResult:
        config = (config or GenerationConfig()).with_overrides(**overrides)
        return super().generate(prompts, config.with_overrides(n=config.n + 1))


def test_each_tree_counts_the_completions_and_tokens_its_generator_returned():
    tree, _, _ = train_tree(iterations=5)
    # Three expansions (root, A, B) of 4 samples; the scripted generator reports len(text)
    # tokens per sample, and B's script repeats its one sample.
    samples = TRAIN_SCRIPT[INIT] + TRAIN_SCRIPT[INIT + A] + TRAIN_SCRIPT[INIT + B] * 4
    assert (tree.completions_generated, tree.tokens_generated) == (
        12, sum(len(text) for text in samples))
    assert search_budget([tree]) == [(12, sum(len(text) for text in samples))]
    assert tree.completions_generated == sum(len(n.completions) for n in tree.nodes)


def test_lockstep_charges_each_tree_what_its_sequential_search_generated():
    problems, script, rewards = two_problem_script()
    lockstep = run_mcts(problems, ScriptedGenerator(script), None, ScriptedVerifier(rewards),
                        config(iteration_limit=5))
    sequential = run_mcts_sequential(problems, ScriptedGenerator(script), None,
                                     ScriptedVerifier(rewards), config(iteration_limit=5))
    assert search_budget(lockstep) == search_budget(sequential)
    assert all(completions > 0 and tokens > 0 for completions, tokens in search_budget(lockstep))


def test_a_tree_read_back_from_the_tables_has_no_budget_of_its_own():
    tree, _, _ = train_tree(iterations=3)
    [copy] = tables_to_trees(*trees_to_tables([tree]))
    assert copy == tree and search_budget([copy]) == [(0, 0)]


def test_a_search_generating_more_completions_than_its_budget_fails_loudly():
    generator = GreedyGenerator(TRAIN_SCRIPT)
    with pytest.raises(RuntimeError, match=r"toy/p: .* 5 completions, over its budget of 4"):
        run_mcts([problem()], generator, None, ScriptedVerifier(TRAIN_REWARDS),
                 config(iteration_limit=1, num_sample=4))
    # Without an iteration limit there is no completion budget to hold the search to.
    clock = FakeClock()
    [tree] = run_mcts([problem()], GreedyGenerator(CHAIN, clock, seconds=1.0), None,
                      ScriptedVerifier({}), config(iteration_limit=None, time_limit=2.0),
                      clock=clock)
    assert tree.completions_generated == 2 * 5


# ----------------------------------------------------------------------------- test phase


TEST_SCRIPT = {
    INIT: [RET0, "    a = 1\n    return a\n", "    a = 1\n    return 2\n"],
    INIT + A: ["    return a\n"],
}
TEST_SCORES = {INIT + A: 0.6, P4: 0.2, P1: 0.9, P2: 0.3}


def scored_tree(iterations: int = 2) -> tuple[Tree, ScriptedGenerator, ScriptedScorer]:
    generator, scorer = ScriptedGenerator(TEST_SCRIPT), ScriptedScorer(TEST_SCORES)
    cfg = MCTSConfig.test_phase(iteration_limit=iterations, num_sample=3, num_decision=1)
    [tree] = run_mcts([problem()], generator, None, scorer, cfg)
    return tree, generator, scorer




def test_test_phase_scores_nodes_as_a_prm_and_answers_with_the_best_completion():
    assert MCTSConfig.test_phase().exploration_constant == 0.1
    tree, _, scorer = scored_tree(iterations=2)
    # it 0: children "return 0" (V = VM = 0.2, 1 sample: 1 visit) and A (V = 0.6; its second
    #       sample adds a visit with V: (2, 1.2)); num_decision=1 keeps A, the better V,
    #       although it came second. The completions P4, P1, P2 are scored; the root gets the
    #       children's visits and sums: (3, 1.4).
    # it 1: A is expanded: one terminal child (3 samples) whose state is P1, V 0.9 (already
    #       scored as a completion) -> (3, 2.7); A (5, 3.9), root (6, 4.1).
    summary = [(n.action, n.prior, n.visits, round(n.value_sum, 9), n.visible) for n in tree.nodes]
    assert summary == [
        ("", None, 6, 4.1, True),
        (RET0, 0.2, 1, 0.2, False),
        (A, 0.6, 5, 3.9, True),
        ("    return a\n", 0.9, 3, 2.7, True),
    ]
    assert [c.reward for c in tree.nodes[2].completions] == [0.9, 0.9, 0.9]
    best = best_completion(tree)
    assert best is not None and best.program == P1 and best.reward == 0.9 and not best.verified


def test_the_value_model_sees_the_problem_text_and_the_full_state():
    _, _, scorer = scored_tree(iterations=2)
    # One score call per iteration; the second needed nothing new. Answers include init_code.
    assert scorer.calls == [[P4, P1, P2, INIT + A]]
    assert set(scorer.questions) == {QUESTION}


def test_a_visited_terminal_in_the_test_phase_adds_one_visit_with_its_value_unscored():
    tree, generator, scorer = scored_tree(iterations=3)
    # it 2: A's only child, terminal and visited (3, 2.7): one more visit with V = 0.9.
    assert (tree.nodes[3].visits, round(tree.nodes[3].value_sum, 9)) == (4, 3.6)
    assert len(scorer.calls) == 1 and len(generator.calls) == 2


# ----------------------------------------------------------------------------- batching


def two_problem_script() -> tuple[list[Problem], dict[str, list[str]], dict[str, float]]:
    script = dict(TRAIN_SCRIPT)
    script |= {G: ["    return 1\n", "    y = 2\n    return y\n"],
               G + "    y = 2\n": ["    return y\n", "    return 3\n"]}
    rewards = TRAIN_REWARDS | {G + "    y = 2\n    return y\n": 1.0}
    return [problem("p"), problem("q", G)], script, rewards


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
    keys = [("toy", "p"), ("toy", "q")]
    assert cfg.seed == call_seed(7, keys, 0) != call_seed(7, keys[:1], 0)
    assert call_seed(7, [("toy", "p")], 0) != call_seed(7, [("apps", "p")], 0)
    assert (cfg.n, cfg.temperature, cfg.max_tokens, cfg.stop) == (4, 0.5, 64, ("```",))
    assert prompts[0] == format_prompt(problems[0], None)
    assert call_seed(7, keys[:1], 0) == call_seed(7, keys[:1], 0) != call_seed(7, keys[:1], 1)


def test_a_batch_mixing_stop_sets_makes_one_generate_call_per_set():
    toy, ds = problem("1"), problem("1", INIT, domain="ds1000")  # same id, other domain
    generator = ScriptedGenerator({INIT: [RET0]})
    trees = run_mcts([toy, ds], generator, None, ScriptedVerifier({}), config(iteration_limit=1))
    assert [t.key for t in trees] == [("toy", "1"), ("ds1000", "1")]
    assert [("```",) == cfg.stop for _, cfg in generator.calls] == [True, False]
    assert "</code>" in generator.calls[1][1].stop
    with pytest.raises(ValueError, match="unique by \\(domain, problem_id\\)"):
        run_mcts([toy, toy], generator, None, ScriptedVerifier({}), config())


# ----------------------------------------------------------------------------- tables


def test_tables_round_trip_through_parquet(tmp_path: Path):
    trees = [train_tree()[0]]
    generator, scorer = ScriptedGenerator(TEST_SCRIPT), ScriptedScorer(TEST_SCORES)
    trees += run_mcts([problem("p", domain="apps")], generator, None, scorer,
                      MCTSConfig.test_phase(iteration_limit=2, num_sample=3, num_decision=1))
    nodes, completions = trees_to_tables(trees)
    pq.write_table(nodes, tmp_path / "nodes.parquet")
    pq.write_table(completions, tmp_path / "completions.parquet")
    back = tables_to_trees(pq.read_table(tmp_path / "nodes.parquet"),
                           pq.read_table(tmp_path / "completions.parquet"))
    assert back == trees  # same problem id in two domains: two trees
    assert [t.key for t in back] == [("toy", "p"), ("apps", "p")]
    assert [t.known for t in back] == [t.known for t in trees]
    assert nodes.num_rows == 8 + 4 and completions.num_rows == (4 + 4 + 4) + (3 + 3)
    row = completions.to_pylist()[0]
    assert row["answer"] == P1[len(INIT):] and row["program"] == P1 and row["domain"] == "toy"
    assert nodes.column("value").to_pylist()[0] == pytest.approx(8.5 / 14)


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


def test_value_data_rows_are_raw_prompt_and_full_state_with_duplicates():
    tree, _, _ = train_tree()
    table = value_data([tree], [problem(), problem("p", domain="apps")])
    assert table.schema == VALUE_DATA
    rows = [(r["answer"], r["reward"], r["source"]) for r in table.to_pylist()]
    # Terminal: every completion, depth first (root, A, B), duplicates kept.
    assert rows[:12] == [(p, TRAIN_REWARDS[p], "terminal")
                         for p in [P1, P2, P3, P4, P1, P1, P2, P5, P3, P3, P3, P3]]
    # Intermediate: the expanded nodes root, A, B with their V, state including init_code.
    assert rows[12:] == [(INIT, 8.5 / 14, "intermediate"), (INIT + A, 5 / 6, "intermediate"),
                         (INIT + B, 0.5, "intermediate")]
    assert set(table.column("prompt").to_pylist()) == {QUESTION}
    assert set(zip(table.column("domain").to_pylist(),
                   table.column("problem_id").to_pylist(), strict=True)) == {("toy", "p")}
    with pytest.raises(KeyError, match="toy/p"):
        value_data([tree], [problem("p", domain="apps")])


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
    assert all(len(n.completions) == 2 for n in tree.nodes if n.expanded)
    assert all(c.program == reference and c.reward == 1.0 and c.verified
               for n in tree.nodes for c in n.completions)
    assert (tree.root.visits, tree.root.value) == (6, 1.0)


def test_vm_mcts_answer_ties_go_to_the_first_completion_in_depth_first_order():
    """Depth first, node 3 (under node 1) comes before node 2, though node 2 was created
    first: the original sorts its preorder list of completions stably by score."""
    from restrl.search import Completion, Node, Tree, best_completion

    nodes = [Node(0, -1, 0, "", ""), Node(1, 0, 1, "a\n", "a\n"), Node(2, 0, 1, "b\n", "b\n"),
             Node(3, 1, 2, "c\n", "a\nc\n")]
    nodes[0].children = [1, 2]
    nodes[1].children = [3]
    nodes[2].completions = [Completion("b\nlate\n", 0.5)]
    nodes[3].completions = [Completion("a\nc\nfirst\n", 0.5)]
    tree = Tree("toy", "p", nodes)
    assert best_completion(tree).program == "a\nc\nfirst\n"


def test_vm_mcts_can_answer_with_the_program_its_completions_vote_for():
    """answer_rule="vote": two copies of a program (trailing spaces aside) outvote one program
    with a higher score; the default keeps the original's highest score."""
    from restrl.search import Completion, Node, Tree, best_completion

    nodes = [Node(0, -1, 0, "", ""), Node(1, 0, 1, "a\n", "a\n")]
    nodes[0].children = [1]
    nodes[0].completions = [Completion("x = 1\n", 0.9), Completion("x = 2\n", 0.5)]
    nodes[1].completions = [Completion("x = 2   \n", 0.5), Completion("x = 3\n", None)]
    tree = Tree("toy", "p", nodes)
    assert best_completion(tree).program == "x = 1\n"
    assert best_completion(tree, "vote").program == "x = 2\n"


# ----------------------------------------------------------------------------- benchmark decoder


def test_the_benchmark_decoder_samples_a_prompt_alike_in_any_batch_and_from_a_cached_prefix():
    """benchmarks/mcts_batching.py's identical-trees check rests on this: a prompt's samples do
    not depend on the other prompts of the call, nor on whether its prefix was cached."""
    import importlib.util

    from restrl.toy.tiny_model import tiny_model_path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "mcts_batching.py"
    spec = importlib.util.spec_from_file_location("mcts_batching", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    generator = bench.PromptSeededHF(str(tiny_model_path()), device="cpu")
    cfg = GenerationConfig(n=3, temperature=1.0, max_tokens=16, stop=("```",))
    short, other = "def f(x):\n", "def g(y, z):\n    return"
    alone = generator.generate([short], cfg)
    generator.forget_prompts()
    batched = generator.generate([other, short], cfg)
    assert batched.samples[1] == alone.samples[0]
    assert len(set(alone.texts[0])) > 1  # the n samples of a prompt are drawn apart
    longer = short + "    y = x\n"
    from_prefix = generator.generate([longer], cfg)  # `short` is cached: only the rest is run
    generator.forget_prompts()
    assert generator.generate([longer], cfg).samples == from_prefix.samples


class StateScorer(ScriptedScorer):
    """A scorer that, like the oracle, is told which texts are whole programs."""

    def __init__(self, values):  # noqa: ANN001
        super().__init__(values)
        self.flags: list[tuple[str, bool]] = []

    def score_states(self, questions, answers, complete):  # noqa: ANN001, ANN201
        self.flags += list(zip(answers, complete, strict=True))
        return self.score(questions, answers)


def test_a_state_scorer_is_told_completions_from_partial_states():
    generator = ScriptedGenerator({"": ["    return 1\n    # more\n", "    return 2"]})
    scorer = StateScorer({})
    run_mcts([problem()], generator, None, scorer,
             config(iteration_limit=1, num_sample=2, phase="test"))
    flags = dict(scorer.flags)
    assert flags[INIT + "    return 1\n    # more\n"] is True      # a completion
    assert flags[INIT + "    return 2\n"] is True                   # a terminal child
    assert flags[INIT + "    return 1\n"] is False                  # a partial state
