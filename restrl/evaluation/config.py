"""What an evaluation runs: methods, budgets and the test-phase search (the seed's `eval.py`)."""

from __future__ import annotations

import dataclasses

from pydantic import Field

from restrl.answers import ANSWER_RULES
from restrl.configs import config
from restrl.sampling import SamplingConfig
from restrl.search import MCTSConfig

METHODS = ("sample", "best_of_n", "vm_mcts", "oracle_mcts")
ORIGINAL_METHODS = METHODS[:3]
SCORED_METHODS = ("best_of_n", "vm_mcts")


@config
class EvalConfig:
    """Evaluation settings; the defaults are the ReST-RL seed's `eval.py` flags."""

    # --- methods ---
    methods: list[str] = Field(default_factory=lambda: list(ORIGINAL_METHODS), description=(
        "sample (pass@k over sampling.n samples), best_of_n (keep the best-scored of N "
        "samples), vm_mcts (value-guided MCTS decoding); oracle_mcts (restrl's check of the "
        "search: the same MCTS valued by the verifier, rollouts for partial states) on "
        "request."))
    # --- sampling and best-of-N ---
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(n=5), description="Samples per problem for "
        "pass@k; best-of-N reuses them (the original's --num_sample 5).")
    ks: list[int] = Field(default_factory=lambda: [1],
                          description="pass@k values to report (k <= sampling.n).")
    best_of_n: list[int] = Field(default_factory=lambda: [5],
                                 description="N values for best-of-N (N <= sampling.n).")
    rm_type: str = Field("orm", description="Score whole answers (orm) or every line prefix, "
                         "keeping the worst (prm).")
    answer_rules: list[str] = Field(
        default_factory=lambda: ["best"], description="How best-of-N and VM-MCTS answer from "
        "their scored programs, each rule reported: best (the highest score, the original's) "
        "and/or vote (the program whose identical copies' scores sum highest; metrics "
        "best_of_N_vote/..., vm_mcts_vote/...). The oracle always takes the highest; sampling "
        "also reports the plain majority vote of N (majority_of_N/...), which needs no scorer.")
    reward_model: str | None = Field(
        None, description="A Hugging Face sequence-classification reward model to score with "
        "instead of restrl's value model.")
    # --- VM-MCTS ---
    mcts: MCTSConfig = Field(
        default_factory=lambda: MCTSConfig.test_phase(iteration_limit=15, num_sample=5,
                                                      num_decision=5),
        description="The test-phase search (the original's --method MCTS flags: 15 "
        "iterations, 5 samples, 5 decisions); its budget is at most iterations x num_sample "
        "completions per problem.")
    oracle_rollouts: int = Field(2, ge=1, description="oracle_mcts: completions sampled from a "
                                 "partial state to value it (counted in its budget).")
    seed: int = Field(0, description="Seed of the evaluation's sampling and search.")

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown evaluation methods {sorted(unknown)}; expected {METHODS}")
        rules = self.answer_rules
        if not rules or set(rules) - set(ANSWER_RULES) or len(set(rules)) < len(rules):
            raise ValueError(f"answer_rules {rules} must be distinct rules of {ANSWER_RULES}")

    def mcts_budget(self) -> int:
        """Most completions VM-MCTS generates per problem (iterations x samples)."""
        return int(self.mcts.iteration_limit or 0) * self.mcts.num_sample

    def without_scorer(self) -> tuple[EvalConfig, list[str]]:
        """This config with the methods that need a value or reward model left out, and those
        methods (for the warning and the run's summary)."""
        skipped = [m for m in self.methods if m in SCORED_METHODS]
        kept = [m for m in self.methods if m not in SCORED_METHODS]
        return dataclasses.replace(self, methods=kept), skipped
