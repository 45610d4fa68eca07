"""ReST filtering (DESIGN.md step 3): verified samples -> GRPO / DPO / SFT training rows."""

from restrl.rest.builder import (
    RestDataStats,
    Sample,
    aggregate,
    best_sample,
    build_dpo_data,
    build_grpo_data,
    build_rest_data,
    build_sft_data,
    group_samples,
    join_samples,
    preference_pair,
    prefix_count,
    problem_rng,
    reward_std,
    sample_prefix_lengths,
    solution_prefixes,
)
from restrl.rest.config import REST_MODES, RestDataConfig, RestMode

__all__ = [
    "REST_MODES",
    "RestDataConfig",
    "RestDataStats",
    "RestMode",
    "Sample",
    "aggregate",
    "best_sample",
    "build_dpo_data",
    "build_grpo_data",
    "build_rest_data",
    "build_sft_data",
    "group_samples",
    "join_samples",
    "preference_pair",
    "prefix_count",
    "problem_rng",
    "reward_std",
    "sample_prefix_lengths",
    "solution_prefixes",
]
