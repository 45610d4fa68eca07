"""Stage 1 tasks: load problems, sample, verify, build ReST data, train the policy."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task, unmapped

from restrl import stages, tracking
from restrl.artifacts import ArtifactRef
from restrl.rest import RestDataConfig
from restrl.sampling import SamplingConfig
from restrl.stages import GeneratorSpec, ProblemSource, VerifyConfig
from restrl.training.grpo import GRPOTrainConfig
from restrl.training.preference import DPOTrainConfig, SFTTrainConfig
from tasks.common import CACHE, RunContext, dask_address, publish, step_logger


@task(name="load-problems", cache_policy=CACHE, persist_result=True)
def load_problems(ctx: RunContext, source: ProblemSource) -> ArtifactRef:
    ref, rejected = stages.load_problems(ctx.store(), source, ctx.run_ids())
    logger = get_run_logger()
    for row in rejected:
        logger.warning("set aside %s", row)
    logger.info("%d %s problems -> %s", ref.rows, source.domain, ref.uri)
    publish(ref, f"{source.domain} problems", {"problems": ref.rows, "set_aside": len(rejected)})
    return ref


@task(name="merge-problem-sets", cache_policy=CACHE, persist_result=True)
def merge_problems(ctx: RunContext, sets: list[ArtifactRef]) -> ArtifactRef:
    ref = stages.merge_problems(ctx.store(), sets, ctx.run_ids())
    get_run_logger().info("%d problems from %d sets -> %s", ref.rows, len(sets), ref.uri)
    publish(ref, "problems", {"problems": ref.rows, "sets": len(sets)})
    return ref


def load_problem_sets(ctx: RunContext, sources: list[ProblemSource]) -> ArtifactRef:
    """Each problem set as its own artifact, then one artifact of all (parents: the sets)."""
    refs = [load_problems(ctx, source) for source in sources]
    return refs[0] if len(refs) == 1 else merge_problems(ctx, refs)


@task(name="plan-shards")
def plan(ctx: RunContext, step: str, *args: object) -> stages.ShardPlan:
    """Which shards of a sampling or verification step still have to be committed."""
    planner = {"sample": stages.plan_sample, "verify": stages.plan_verify}[step]
    return planner(ctx.store(), *args)


@task(name="sample-shards", retries=2, retry_delay_seconds=10)
def sample_shards(ctx: RunContext, shard_plan: stages.ShardPlan, problems: ArtifactRef,
                  generator: GeneratorSpec, config: SamplingConfig, indices: list[int]) -> None:
    """Retried: an API backend's outage should not fail the flow; committed shards stay."""
    logger = get_run_logger()
    stages.sample_shards(ctx.store(), shard_plan, problems, generator, config, indices,
                         on_shard=lambda i, n: logger.info("sampled shard %d/%d", i + 1, n))


@task(name="verify-shards")
def verify_shards(ctx: RunContext, shard_plan: stages.ShardPlan, problems: ArtifactRef,
                  completions: ArtifactRef, config: VerifyConfig, indices: list[int]) -> None:
    logger = get_run_logger()
    stages.verify_shards(ctx.store(), shard_plan, problems, completions, config, indices,
                         on_shard=lambda i, n: logger.info("verified shard %d/%d", i + 1, n))


@task(name="commit-shards")
def commit(ctx: RunContext, shard_plan: stages.ShardPlan) -> ArtifactRef:
    return stages.commit_shards(ctx.store(), shard_plan, ctx.run_ids())


def _groups(shard_plan: stages.ShardPlan) -> list[list[int]]:
    """One task per shard on a Dask cluster; locally one task for all (the model loads once)."""
    if dask_address():
        return [[i] for i in shard_plan.pending]
    return [list(shard_plan.pending)] if shard_plan.pending else []


def sample(ctx: RunContext, problems: ArtifactRef, generator: GeneratorSpec,
           config: SamplingConfig) -> ArtifactRef:
    """Sampling fanned out over the flow's task runner, shard by shard."""
    shard_plan = plan(ctx, "sample", problems, generator, config)
    groups = _groups(shard_plan)
    sample_shards.map(ctx, unmapped(shard_plan), unmapped(problems), unmapped(generator),
                      unmapped(config), groups).result()
    ref = commit(ctx, shard_plan)
    publish(ref, "completions", {"completions": ref.rows, "n_per_problem": config.n})
    return ref


def verify(ctx: RunContext, problems: ArtifactRef, completions: ArtifactRef,
           config: VerifyConfig) -> ArtifactRef:
    """Verification fanned out over the flow's task runner, shard by shard."""
    shard_plan = plan(ctx, "verify", problems, completions, config)
    verify_shards.map(ctx, unmapped(shard_plan), unmapped(problems), unmapped(completions),
                      unmapped(config), _groups(shard_plan)).result()
    ref = commit(ctx, shard_plan)
    store = ctx.store()
    summary = stages.summarize_verdicts(store, ref)
    if ctx.mlflow_parent_run_id:
        tracking.log_metrics(ctx.mlflow_parent_run_id,
                             {f"verify/{k}": v for k, v in summary.items()})
    publish(ref, "verdicts", summary)
    return ref


@task(name="build-rest-data", cache_policy=CACHE, persist_result=True)
def build_rest_data(ctx: RunContext, problems: ArtifactRef, completions: ArtifactRef,
                    verdicts: ArtifactRef, config: RestDataConfig, model: str) -> ArtifactRef:
    ref, stats = stages.build_rest_data(ctx.store(), problems, completions, verdicts, config,
                                        model, ctx.run_ids())
    get_run_logger().info("ReST %s data: %s -> %s", config.mode, stats, ref.uri)
    if ctx.mlflow_parent_run_id:
        tracking.log_metrics(ctx.mlflow_parent_run_id, {f"rest/{k}": v for k, v in stats.items()})
        _log_reward_distribution(ctx, verdicts, config.std_accept_threshold)
    publish(ref, f"ReST {config.mode} data", stats)
    return ref


def _log_reward_distribution(ctx: RunContext, verdicts: ArtifactRef, threshold: float) -> None:
    """The per-problem reward and reward-std histograms, on the flow's MLflow run."""
    import tempfile

    from restrl.rest.plots import plot_reward_distribution

    rows = ctx.store().read_table(verdicts).select(["domain", "problem_id", "reward"]).to_pylist()
    with tempfile.TemporaryDirectory() as tmp:
        plot = plot_reward_distribution(rows, threshold, Path(tmp) / "reward_distribution.png")
        tracking.log_artifact_file(ctx.mlflow_parent_run_id, plot, "plots")


@task(name="train-policy", cache_policy=CACHE, persist_result=True)
def train_policy(ctx: RunContext, mode: str, model: str, data: ArtifactRef,
                 problems: list[ArtifactRef], config: GRPOTrainConfig | DPOTrainConfig
                 | SFTTrainConfig, verify_config: VerifyConfig, work_dir: str) -> ArtifactRef:
    """GRPO, DPO or SFT (by the ReST data mode) as a nested MLflow run with per-step metrics;
    the checkpoint is a `policy` artifact."""
    store = ctx.store()
    logger = get_run_logger()
    with tracking.run(f"train-{mode}", stages.params_of(config, base_model=model),
                      parent_run_id=ctx.mlflow_parent_run_id) as run_id:
        tracking.log_input(run_id, data.uri, data.sha256, f"{mode}_data")
        if mode == "grpo":
            ref, extra = stages.train_grpo(store, model, data, problems, config, verify_config,
                                           Path(work_dir), ctx.run_ids(run_id),
                                           on_log=step_logger(run_id))
        else:
            ref, extra = stages.train_preference(store, mode, model, data, config,
                                                 Path(work_dir), ctx.run_ids(run_id),
                                                 on_log=step_logger(run_id))
        tracking.set_tags(run_id, {"restrl.policy_uri": ref.uri})
        tracking.log_model_reference(run_id, "policy", ref.uri,
                                     {k: v for k, v in extra.items() if isinstance(v, int | float)},
                                     stages.params_of(config, base_model=model, mode=mode))
    logger.info("policy -> %s (%s)", ref.uri, extra)
    publish(ref, f"ReST {mode.upper()} policy", {"rows_used": extra.get("rows_used", 0)})
    return ref

