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

    Defaults are the ReST-RL seed's (`experiment/process_gen_data.py` in
    https://github.com/THUDM/ReST-RL, paper arXiv 2508.19576; REFERENCE.md section 3). A problem
    is known by (domain, problem_id), so several problem sets build one data set.

    > Parameters that choose the output

    mode (`str`, default `"grpo"`): `"grpo"` builds ReST-GRPO rows (GRPO_DATA): a base row per
        kept problem plus rows whose prompt already holds a line prefix of its best solution.
        `"dpo"` builds one (chosen, rejected) pair per problem whose rewards are not all equal
        (DPO_DATA). `"sft"` keeps every completion with reward >= `completion_accept_threshold`
        (SFT_DATA). The seed's `--mode`.

    > Parameters of the ReST filter (mode `grpo`)

    std_accept_threshold (`float`, default `0.05`): a problem is dropped when the population
        standard deviation (numpy `std`, ddof=0, as the seed) of its samples' rewards is below
        this. GRPO's advantage is reward minus group mean over group std, so a group of (near)
        equal rewards gives no gradient and only costs compute. The comparison is strict: std
        exactly at the threshold is kept; a single sample has std 0 and is dropped. Unused in
        basic mode. The seed's `--std_accept_threshold_grpo`.
    completion_accept_threshold (`float`, default `0.9`): the best completion's reward must be
        at least this for its line prefixes to become rows (a prefix of a wrong program would
        steer the policy wrong); in mode `sft` the reward a completion needs to be kept. The
        seed's `--completion_accept_threshold_grpo` / `--completion_accept_threshold_sft`
        (both 0.9).

    > Parameters of the prefix rows (mode `grpo`)

    n_sample (`int | float`, default `0.5`): how many prefix rows to draw per accepted problem
        whose best solution has L lines (L candidate prefixes, the last one the whole solution).
        An `int` > 0 is a count; a `float` in (0, 1] a ratio, `ceil(L * n_sample)`. Draws are
        *with replacement*, so a count may exceed L and a prefix may repeat. `n_sample <= 0` is
        the basic mode: a base row for every problem with samples, no std filter and no prefix
        rows (the plain-GRPO baseline). The seed's `--n_sample`.
    alpha (`float`, default `0.95`): the weight of prefix k (its first k lines) is
        `alpha**(k - 1)`, so with alpha < 1 short prefixes are favoured: most rows start near
        the root, where the policy's own decisions matter most, while long prefixes still teach
        the late steps. The seed's `--alpha` (its sampler requires 0 < alpha < 1; alpha = 1,
        uniform, and alpha > 1, favouring long prefixes, are allowed here).
    extract_all_lines (`bool`, default `False`): keep each of the L prefixes once instead of
        drawing; `n_sample` and `alpha` are then unused (this wins over basic mode, as in the
        seed). The seed's `--extract_all_lines`.
    seed (`int`, default `0`): makes the draws repeatable. Each problem gets its own
        `random.Random` seeded from sha256(f"{seed}:{domain}:{problem_id}"), so a problem's
        draws depend neither on the other problems nor on the row order. (The seed draws from
        the unseeded global `random`, so its rows are not repeatable.)

    > Parameters of the DPO / SFT rows

    ds1000_closing_from_formatted_prompt (`bool`, default `False`): DPO / SFT samples get the
        stop that closes the reply appended (`restrl.prompts.closing_stop`); for DS1000 that is
        the tag the prompt opened, read from the prompt's end. False reads the plain prompt
        (query + "\\n" + reply prefix), whose end is the problem text or init_code. True reads
        the chat-formatted prompt, as the seed does: under a chat template it then ends with
        the assistant header when init_code is empty, and such samples get no closing tag.
    """

    mode: RestMode = "grpo"
    std_accept_threshold: float = 0.05
    completion_accept_threshold: float = 0.9
    n_sample: int | float = 0.5
    alpha: float = 0.95
    extract_all_lines: bool = False
    seed: int = 0
    ds1000_closing_from_formatted_prompt: bool = False

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

    @property
    def basic_mode(self) -> bool:
        """Mode `grpo` without the filter and prefixes: `n_sample <= 0` and not
        `extract_all_lines` (the seed's "basic" GRPO data)."""
        return not self.extract_all_lines and self.n_sample <= 0

    def with_overrides(self, **overrides: Any) -> RestDataConfig:
        """A copy with some fields replaced (validated again; unknown names raise TypeError)."""
        return dataclasses.replace(self, **overrides) if overrides else self


def _check_n_sample(n_sample: int | float) -> None:
    if isinstance(n_sample, bool) or not isinstance(n_sample, int | float):
        raise ValueError(f"n_sample must be an int or a float, got {n_sample!r}")
    if isinstance(n_sample, float) and not n_sample <= 1:  # also rejects NaN
        raise ValueError(
            f"a float n_sample is a ratio in (0, 1] (or <= 0 for basic mode), got {n_sample}; "
            "use an int for a count"
        )
