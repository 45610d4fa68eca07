"""The oracle scorer values by the verifier and counts what its rollouts generate."""

from __future__ import annotations

from dataclasses import dataclass

from restrl.evaluation.oracle import OracleScorer
from restrl.generation import GenerationResult, Sample
from restrl.problems.model import Problem


def problem(pid: str) -> Problem:
    return Problem(problem_id=pid, domain="toy", prompt=f"question {pid}",
                   init_code="def f(x):\n", tests="", entry_point="f", io_mode="check")


class Continuations:
    """Each rollout call returns these texts (and reports 3 tokens per sample)."""

    def __init__(self, texts: list[str]):
        self.texts, self.prompts, self.configs = texts, [], []

    def generate(self, prompts, config):  # noqa: ANN001, ANN201
        self.prompts += prompts
        self.configs.append(config)
        return GenerationResult([[Sample(t, 3, "stop") for t in self.texts[:config.n]]
                                 for _ in prompts])

    def close(self) -> None:
        pass


@dataclass
class Verdict:
    reward: float


class Rewards:
    """A program's reward is 1 when it returns x + 1, else 0."""

    def __init__(self):
        self.seen = []

    def verify(self, problems, programs):  # noqa: ANN001, ANN201
        self.seen += programs
        return [Verdict(float("return x + 1" in p)) for p in programs]


def test_a_complete_program_is_valued_by_its_verified_reward_without_rollouts():
    generator = Continuations([])
    oracle = OracleScorer([problem("a")], generator, None, Rewards())
    assert oracle.score(["question a"] * 2, ["def f(x):\n    return x + 1\n",
                                             "def f(x):\n    return x\n"]) == [1.0, 0.0]
    assert generator.prompts == [] and oracle.spent[("toy", "a")] == [0, 0]


def test_a_partial_state_is_the_mean_reward_of_its_rollouts_and_they_count_in_the_budget():
    generator = Continuations(["    return x + 1\n```", "    return x\n", "    return x + 1",
                               "    return 0"])
    verifier = Rewards()
    oracle = OracleScorer([problem("a"), problem("b")], generator, None, verifier, rollouts=4)
    values = oracle.score_states(["question a", "question b"],
                                 ["def f(x):\n", "def f(x):\n    return x + 1\n"], [False, True])
    assert values == [0.5, 1.0]
    assert oracle.spent == {("toy", "a"): [4, 12], ("toy", "b"): [0, 0]}
    assert "def f(x):\n    return x + 1\n" in verifier.seen  # the stop string cut off
    assert generator.configs[0].n == 4 and generator.prompts[0].endswith("def f(x):\n")
