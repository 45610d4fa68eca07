"""Step: sample. `n` completions per problem from the policy, committed shard by shard."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from restrl.artifacts import ArtifactRef, ArtifactStore
from restrl.artifacts.step import (
    RunIds,
    ShardPlan,
    commit_shards,
    params_of,
    plan_shards,
    put_shard,
    shard_count,
)
from restrl.sampling import SamplingConfig
from restrl.steps.models import GeneratorSpec, model_identity, open_policy
from restrl.steps.problems import read_problems

OnShard = Callable[[int, int], None]


def plan_sample(store: ArtifactStore, problems_ref: ArtifactRef, generator: GeneratorSpec,
                config: SamplingConfig) -> ShardPlan:
    params = params_of(config, backend=generator.backend,
                       **model_identity(store, generator.model))
    shards = shard_count(problems_ref.rows, config.shard_problems)
    return plan_shards(store, ["completions"], params, [problems_ref], shards)


def sample_shards(store: ArtifactStore, plan: ShardPlan, problems_ref: ArtifactRef,
                  generator: GeneratorSpec, config: SamplingConfig, indices: Sequence[int],
                  on_shard: OnShard | None = None) -> None:
    """Sample and commit the given shards with one loaded generator."""
    import pyarrow as pa

    from restrl.artifacts.schemas import COMPLETIONS
    from restrl.sampling import sample_problems, shards

    if not indices:
        return
    pieces = shards(read_problems(store, problems_ref), config.shard_problems)
    policy, tokenizer = open_policy(store, generator)
    try:
        for index in indices:
            # Seeded by shard index, so a resumed or distributed run draws the same samples.
            rows = sample_problems(pieces[index], policy, tokenizer, config,
                                   seed=config.seed + 100_003 * index)
            put_shard(store, plan, index, [pa.Table.from_pylist(rows, schema=COMPLETIONS)])
            if on_shard is not None:
                on_shard(index, plan.shards)
    finally:
        policy.close()


def sample(store: ArtifactStore, problems_ref: ArtifactRef, generator: GeneratorSpec,
           config: SamplingConfig, run_ids: RunIds | None = None,
           on_shard: OnShard | None = None) -> ArtifactRef:
    """Completions for every problem, n each, committed shard by shard (resumable)."""
    plan = plan_sample(store, problems_ref, generator, config)
    sample_shards(store, plan, problems_ref, generator, config, plan.pending, on_shard)
    return commit_shards(store, plan, run_ids)[0]
