"""`RestDataConfig`: every knob of ReST data building (DESIGN.md step 3) in one place."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

RestMode = Literal["grpo", "dpo", "sft"]
REST_MODES: tuple[str, ...] = ("grpo", "dpo", "sft")


@dataclass(frozen=True)
class RestDataConfig:
    """How sampled, verified completions become training rows (DESIGN.md step 3).

    Defaults are the ReST-RL seed's (`experiment.process_gen_data` in
    https://github.com/THUDM/ReST-RL, paper arXiv 2508.19576).

    > Parameters that choose the output

    mode (`str`, default `"grpo"`): `"grpo"` builds ReST-GRPO rows (GRPO_DATA): a base row per
        problem with reward variance, plus rows whose prompt already holds a line prefix of the
        best solution. `"dpo"` builds one (chosen = best, rejected = worst) pair per problem
        whose best and worst rewards differ (DPO_DATA). `"sft"` keeps every completion with
        reward >= `completion_accept_threshold` (SFT_DATA).

    > Parameters of the ReST filter (mode `grpo`)

    std_accept_threshold (`float`, default `0.05`): a problem is dropped when the population
        standard deviation (numpy `std`, ddof=0) of its samples' rewards is below this. GRPO's
        advantage is reward minus group mean over group std, so a group with (near) equal rewards
        gives no gradient; those problems only cost compute. Population std (ddof=0) is used
        because the group *is* the population GRPO normalises over, and it is defined for a
        single sample (0, so the problem is dropped). The comparison is strict: std exactly at
        the threshold is kept.
    completion_accept_threshold (`float`, default `0.9`): the best completion's reward must be at
        least this for its line prefixes to be used (a prefix of a wrong program would steer the
        policy wrong). In mode `sft` it is the reward a completion needs to be kept.

    > Parameters of the prefix sampling (mode `grpo`)

    n_sample (`int | float`, default `0.5`): how many prefix rows to draw per accepted problem.
        An `int` is a count; a `float` in (0, 1] is a ratio of the L - 1 candidate prefixes of an
        L-line solution, rounded up (`ceil(n_sample * (L - 1))`). Draws are *with replacement*,
        so a count may exceed L - 1 and a prefix may repeat. `n_sample <= 0` keeps base rows only.
    alpha (`float`, default `0.95`): the weight of prefix k (its first k lines) is `alpha**k`, so
        with alpha < 1 short prefixes are favoured: training mostly starts near the root, where
        the policy's own decisions matter most, while long prefixes still teach late steps.
        alpha = 1 draws uniformly; alpha > 1 would favour long prefixes.
    extract_all_lines (`bool`, default `False`): keep every candidate prefix (k = 1 .. L - 1)
        once instead of sampling; `n_sample` and `alpha` are then unused.
    basic (`bool`, default `False`): "basic mode": base rows only, no prefix rows, whatever
        `n_sample` says (the same rows as `n_sample <= 0`). It contradicts `extract_all_lines`,
        so setting both is an error.
    seed (`int`, default `0`): makes the prefix draws repeatable. Each problem gets its own
        `random.Random` seeded from sha256(f"{seed}:{problem_id}"), so a problem's draws depend
        neither on the other problems nor on the row order of the input.
    """

    mode: RestMode = "grpo"
    std_accept_threshold: float = 0.05
    completion_accept_threshold: float = 0.9
    n_sample: int | float = 0.5
    alpha: float = 0.95
    extract_all_lines: bool = False
    seed: int = 0
    basic: bool = False

    def __post_init__(self) -> None:
        if self.mode not in REST_MODES:
            raise ValueError(f"mode must be one of {REST_MODES}, got {self.mode!r}")
        if not self.std_accept_threshold >= 0:  # `not >=` also rejects NaN
            raise ValueError(f"std_accept_threshold must be >= 0, got {self.std_accept_threshold}")
        if not 0 <= self.completion_accept_threshold <= 1:
            raise ValueError(
                "completion_accept_threshold must be in [0, 1] (rewards are), "
                f"got {self.completion_accept_threshold}"
            )
        _check_n_sample(self.n_sample)
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        if self.basic and self.extract_all_lines:
            raise ValueError("basic (base rows only) and extract_all_lines contradict; pick one")

    @property
    def keeps_prefixes(self) -> bool:
        """Whether mode `grpo` adds prefix rows at all."""
        return self.extract_all_lines or (not self.basic and self.n_sample > 0)

    def with_overrides(self, **overrides: Any) -> RestDataConfig:
        """A copy with some fields replaced (validated again; unknown names raise TypeError)."""
        return dataclasses.replace(self, **overrides) if overrides else self


def _check_n_sample(n_sample: int | float) -> None:
    if isinstance(n_sample, bool) or not isinstance(n_sample, int | float):
        raise ValueError(f"n_sample must be an int or a float, got {n_sample!r}")
    if isinstance(n_sample, float) and not n_sample <= 1:  # also rejects NaN
        raise ValueError(
            f"a float n_sample is a ratio in (0, 1] (or <= 0 for none), got {n_sample}; "
            "use an int for a count"
        )
