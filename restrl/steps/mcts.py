"""Step: MCTS. Train-phase search on every problem with verified rollouts (REFERENCE.md s.5):
the trees' nodes and completions, committed a shard of problems at a time."""

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
from restrl.search import MCTSConfig
from restrl.steps.models import GeneratorSpec, model_identity, open_policy
from restrl.steps.problems import read_problems
from restrl.steps.verify import VerifyConfig

OnShard = Callable[[int, int], None]
KINDS = ("mcts_nodes", "mcts_completions")


def plan_mcts(store: ArtifactStore, problems_ref: ArtifactRef, generator: GeneratorSpec,
              config: MCTSConfig) -> ShardPlan:
    params = params_of(config, backend=generator.backend,
                       **model_identity(store, generator.model))
    shards = shard_count(problems_ref.rows, config.shard_problems)
    return plan_shards(store, KINDS, params, [problems_ref], shards)


def mcts_shards(store: ArtifactStore, plan: ShardPlan, problems_ref: ArtifactRef,
                generator: GeneratorSpec, config: MCTSConfig, verify_config: VerifyConfig,
                indices: Sequence[int], on_shard: OnShard | None = None) -> None:
    """Search and commit the given shards with one loaded policy and one warm sandbox pool."""
    from restrl.sampling import shards
    from restrl.search import run_mcts, trees_to_tables

    if not indices:
        return
    problems = read_problems(store, problems_ref)
    pieces = shards(problems, config.shard_problems)
    policy, tokenizer = open_policy(store, generator)
    try:
        with verify_config.verifier(sorted({p.domain for p in problems})) as verifier:
            for index in indices:
                trees = run_mcts(list(pieces[index]), policy, tokenizer, verifier, config)
                put_shard(store, plan, index, trees_to_tables(trees))
                if on_shard is not None:
                    on_shard(index, plan.shards)
    finally:
        policy.close()


def collect_mcts(store: ArtifactStore, problems_ref: ArtifactRef, generator: GeneratorSpec,
                 config: MCTSConfig, verify_config: VerifyConfig, run_ids: RunIds | None = None,
                 on_shard: OnShard | None = None) -> tuple[ArtifactRef, ArtifactRef]:
    """`mcts_nodes` and `mcts_completions` for every problem (resumable by shard)."""
    plan = plan_mcts(store, problems_ref, generator, config)
    mcts_shards(store, plan, problems_ref, generator, config, verify_config, plan.pending,
                on_shard)
    nodes, completions = commit_shards(store, plan, run_ids)
    return nodes, completions
