"""`RestDataConfig`: every knob of ReST data building (DESIGN.md step 3) in one place."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, get_args

from pydantic import Field, field_validator

from restrl.configs import config

RestMode = Literal["grpo", "dpo", "sft"]
REST_MODES: tuple[str, ...] = get_args(RestMode)


@config(frozen=True)
class RestDataConfig:
    """How sampled, verified completions become training rows (DESIGN.md step 3).

    Defaults are the ReST-RL seed's (`experiment/process_gen_data.py` in
    https://github.com/THUDM/ReST-RL, paper arXiv 2508.19576; REFERENCE.md section 3). A problem
    is known by (domain, problem_id), so several problem sets build one data set.
    """

    # --- output ---
    mode: RestMode = Field("grpo", description=(
        '"grpo" builds ReST-GRPO rows (GRPO_DATA): a base row per kept problem plus rows whose '
        'prompt already holds a line prefix of its best solution. "dpo" builds one (chosen, '
        "rejected) pair per problem whose rewards are not all equal (DPO_DATA). \"sft\" keeps "
        "every completion with reward >= completion_accept_threshold (SFT_DATA). The seed's "
        "--mode."))

    # --- ReST filter (mode grpo) ---
    std_accept_threshold: float = Field(0.05, description=(
        "A problem is dropped when the population standard deviation (numpy std, ddof=0, as "
        "the seed) of its samples' rewards is below this. GRPO's advantage is reward minus "
        "group mean over group std, so a group of (near) equal rewards gives no gradient and "
        "only costs compute. The comparison is strict: std exactly at the threshold is kept; a "
        "single sample has std 0 and is dropped. Unused in basic mode. The seed's "
        "--std_accept_threshold_grpo."))
    completion_accept_threshold: float = Field(0.9, description=(
        "The best completion's reward must be at least this for its line prefixes to become "
        "rows (a prefix of a wrong program would steer the policy wrong); in mode sft the "
        "reward a completion needs to be kept. The seed's --completion_accept_threshold_grpo / "
        "--completion_accept_threshold_sft (both 0.9)."))

    # --- prefix rows (mode grpo) ---
    n_sample: int | float = Field(0.5, description=(
        "How many prefix rows to draw per accepted problem whose best solution has L lines (L "
        "candidate prefixes, the last one the whole solution). An int > 0 is a count; a float "
        "in (0, 1] a ratio, ceil(L * n_sample). Draws are with replacement, so a count may "
        "exceed L and a prefix may repeat. n_sample <= 0 is the basic mode: a base row for "
        "every problem with samples, no std filter and no prefix rows (the plain-GRPO "
        "baseline). The seed's --n_sample."))
    alpha: float = Field(0.95, description=(
        "The weight of prefix k (its first k lines) is alpha**(k - 1), so with alpha < 1 short "
        "prefixes are favoured: most rows start near the root, where the policy's own "
        "decisions matter most, while long prefixes still teach the late steps. The seed's "
        "--alpha (its sampler requires 0 < alpha < 1; alpha = 1, uniform, and alpha > 1, "
        "favouring long prefixes, are allowed here)."))
    extract_all_lines: bool = Field(False, description=(
        "Keep each of the L prefixes once instead of drawing; n_sample and alpha are then "
        "unused (this wins over basic mode, as in the seed). The seed's --extract_all_lines."))
    seed: int = Field(0, description=(
        "Makes the draws repeatable. Each problem gets its own random.Random seeded from "
        'sha256(f"{seed}:{domain}:{problem_id}"), so a problem\'s draws depend neither on the '
        "other problems nor on the row order. (The seed draws from the unseeded global "
        "random, so its rows are not repeatable.)"))

    # --- DPO / SFT rows ---
    ds1000_closing_from_formatted_prompt: bool = Field(False, description=(
        "DPO / SFT samples get the stop that closes the reply appended "
        "(restrl.prompts.closing_stop); for DS1000 that is the tag the prompt opened, read "
        "from the prompt's end. False reads the plain prompt (query + \"\\n\" + reply prefix), "
        "whose end is the problem text or init_code. True reads the chat-formatted prompt, as "
        "the seed does: under a chat template it then ends with the assistant header when "
        "init_code is empty, and such samples get no closing tag."))

    @field_validator("n_sample", "seed", mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any) -> Any:
        # pydantic reads True as 1; a flag given where a number belongs is a mistake.
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        return value

    def __post_init__(self) -> None:
        if not self.std_accept_threshold >= 0:  # `not >=` also rejects NaN
            raise ValueError(f"std_accept_threshold must be >= 0, got {self.std_accept_threshold}")
        if not 0 <= self.completion_accept_threshold <= 1:
            raise ValueError(
                "completion_accept_threshold must be in [0, 1] (rewards are), "
                f"got {self.completion_accept_threshold}"
            )
        if isinstance(self.n_sample, float) and not self.n_sample <= 1:  # also rejects NaN
            raise ValueError(
                f"a float n_sample is a ratio in (0, 1] (or <= 0 for basic mode), got "
                f"{self.n_sample}; use an int for a count"
            )
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")

    @property
    def basic_mode(self) -> bool:
        """Mode `grpo` without the filter and prefixes: `n_sample <= 0` and not
        `extract_all_lines` (the seed's "basic" GRPO data)."""
        return not self.extract_all_lines and self.n_sample <= 0

    def with_overrides(self, **overrides: Any) -> RestDataConfig:
        """A copy with some fields replaced, validated again (unknown names are refused)."""
        return dataclasses.replace(self, **overrides) if overrides else self
