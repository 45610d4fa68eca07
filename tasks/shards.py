"""Sharded steps as Prefect tasks: plan, run the pending shards (on Dask when configured), commit.

Sampling, verification and MCTS share this: a plan lists the shards not yet committed, one task
per shard group commits them to the store, and a last task joins them. A rerun after a crash
plans only what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE

from restrl.artifacts import ArtifactRef
from restrl.artifacts.step import ShardPlan, commit_shards
from restrl.steps import mcts, sample, verify
from restrl_tasks.common import RunContext, dask_address


@dataclass(frozen=True)
class Sharded:
    """A sharded step: its planner, its shard runner, and the verb its progress logs use."""

    plan: Callable[..., ShardPlan]
    run: Callable[..., None]
    verb: str


SHARDED = {
    "sample": Sharded(sample.plan_sample, sample.sample_shards, "sampled"),
    "verify": Sharded(verify.plan_verify, verify.verify_shards, "verified"),
    "mcts": Sharded(mcts.plan_mcts, mcts.mcts_shards, "searched"),
}


@task(name="plan-shards", cache_policy=NO_CACHE)
def plan(ctx: RunContext, step: str, args: tuple[Any, ...]) -> ShardPlan:
    """Which shards of the step still have to be committed (the step logs what it reuses)."""
    return SHARDED[step].plan(ctx.store(), *args)


# Retried: an API backend's outage should not fail the flow; committed shards stay.
@task(name="run-shards", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def run_shards(ctx: RunContext, step: str, shard_plan: ShardPlan, args: tuple[Any, ...],
               indices: list[int]) -> None:
    logger = get_run_logger()
    sharded = SHARDED[step]
    sharded.run(ctx.store(), shard_plan, *args, indices,
                on_shard=lambda i, n: logger.info("%s shard %d/%d", sharded.verb, i + 1, n))


@task(name="commit-shards", cache_policy=NO_CACHE)
def commit(ctx: RunContext, shard_plan: ShardPlan) -> tuple[ArtifactRef, ...]:
    return commit_shards(ctx.store(), shard_plan, ctx.run_ids())


def _groups(shard_plan: ShardPlan) -> list[list[int]]:
    """One task per shard on a Dask cluster; locally one task for all (the model loads once)."""
    if dask_address():
        return [[i] for i in shard_plan.pending]
    return [list(shard_plan.pending)] if shard_plan.pending else []


def run_sharded(ctx: RunContext, step: str, plan_args: tuple[Any, ...],
                run_args: tuple[Any, ...] | None = None) -> tuple[ArtifactRef, ...]:
    """The step's artifacts: plan, fan the pending shards out over the flow's task runner,
    commit. `run_args` (default: `plan_args`) are what each shard runner takes after the plan."""
    shard_plan = plan(ctx, step, plan_args)
    runner = run_shards.with_options(name=f"{step}-shards")
    runner.map(ctx, unmapped(step), unmapped(shard_plan), unmapped(run_args or plan_args),
               _groups(shard_plan)).result()
    return commit(ctx, shard_plan)
