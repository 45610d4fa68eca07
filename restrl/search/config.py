"""`MCTSConfig`: every knob of the line-level MCTS (DESIGN.md steps 5 and 8) in one place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from restrl.configs import config
from restrl.generation import GenerationConfig

Phase = Literal["train", "test"]


@config
class MCTSConfig:
    """How the search runs (the ReST-RL seed's `sample_mcts.py` flags and defaults)."""

    # --- search budget ---
    iteration_limit: int | None = Field(100, description=(
        "Iterations per tree (one iteration = select, expand, rollout, backpropagate); the "
        "seed's training runs use 100. When set, it alone bounds the search and time_limit is "
        "ignored, as in the seed."))
    time_limit: float | None = Field(None, description=(
        "Seconds of search per problem, used only when iteration_limit is None. Each tree has "
        "its own clock (its share of the batched calls, see restrl.search.mcts), so lockstep "
        "batching does not shrink a problem's budget."))

    # --- tree ---
    num_sample: int = Field(5, description=(
        "Continuations sampled when a leaf is expanded; they give its children and its stored "
        "completions (one per sample)."))
    num_decision: int = Field(5, description=(
        "Most visible children per node; the rest (lowest V) are never selected. 5 as in the "
        "seed's README commands (its script's default is 3)."))
    exploration_constant: float = Field(0.2, description=(
        "c in the UCT score V + c * sqrt((1 + ln N_parent) / (eps + n)); 0.2 for collecting "
        "value targets, 0.1 for VM-MCTS decoding (MCTSConfig.test_phase), as in the seed."))
    eps: float = Field(0.1, description=(
        "Keeps the UCT exploration term finite for unvisited children."))

    # --- generation ---
    temperature: float = Field(0.7, description=(
        "Sampling temperature; diverse samples make a wider tree."))
    top_p: float = Field(1.0, description="Nucleus sampling mass (1.0: the whole distribution).")
    max_tokens: int = Field(1024, description="Most new tokens per sample.")

    # --- value source ---
    phase: Phase = Field("train", description=(
        '"train" verifies completions in the sandbox (value targets for the VM, DESIGN step '
        '5); "test" uses a Scorer (the trained VM) as a process reward model, VM(problem '
        "text, state), and answers with the best-scored completion (DESIGN step 8)."))

    # --- seeds and resume ---
    seed: int = Field(0, description=(
        "Base of the per-call generation seeds (call_seed) and of the random tie-breaking in "
        "UCT selection (tie_seed): the same seed gives the same search."))
    shard_problems: int = Field(8, description=(
        "Problems per committed search shard: the unit a crash can lose, and the unit that "
        "fans out to workers. The trees of a shard search in lockstep, so larger shards batch "
        "more prompts per generate call."))

    def __post_init__(self) -> None:
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
        if self.shard_problems < 1:
            raise ValueError(f"shard_problems must be >= 1, got {self.shard_problems}")

    @classmethod
    def test_phase(cls, **overrides: Any) -> MCTSConfig:
        """The VM-MCTS decoding config: phase "test" and exploration constant 0.1 (the seed's)."""
        return cls(**{"phase": "test", "exploration_constant": 0.1, **overrides})

    @classmethod
    def toy(cls) -> MCTSConfig:
        """The toy preset's Stage 2 search (value targets): 6 iterations of 4 samples, 3
        decisions, T 1.0, 96 tokens."""
        return cls(iteration_limit=6, num_sample=4, num_decision=3, temperature=1.0,
                   max_tokens=96)

    @classmethod
    def toy_test_phase(cls) -> MCTSConfig:
        """The toy preset's VM-MCTS evaluation: the evaluation's test phase (15 iterations, 5
        samples, 5 decisions) cut to 2 iterations of 4 samples at T 0.7, 96 tokens."""
        return cls.test_phase(iteration_limit=2, num_sample=4, num_decision=5, temperature=0.7,
                              max_tokens=96)

    def generation_config(self, stop: Sequence[str], seed: int) -> GenerationConfig:
        """The sampling settings of one expansion call."""
        return GenerationConfig(n=self.num_sample, temperature=self.temperature, top_p=self.top_p,
                                max_tokens=self.max_tokens, stop=tuple(stop), seed=seed)
