"""Stage 1 tasks: load problems, sample, verify, build ReST data, train the policy."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from restrl import tracking
from restrl.artifacts import ArtifactRef
from restrl.artifacts.step import params_of
from restrl.rest import RestDataConfig
from restrl.sampling import SamplingConfig
from restrl.steps import dpo_sft, grpo, problems, rest_data
from restrl.steps.models import GeneratorSpec
from restrl.steps.problems import ProblemSource
from restrl.steps.verify import VerifyConfig, summarize_verdicts
from restrl.training.grpo import GRPOTrainConfig
from restrl.training.preference import DPOTrainConfig, SFTTrainConfig
from restrl_tasks.common import RunContext, announce, publish, publish_plot, step_logger
from restrl_tasks.shards import run_sharded


@task(name="load-problems", cache_policy=NO_CACHE)
def load_problems(ctx: RunContext, source: ProblemSource) -> ArtifactRef:
    ref, rejected = problems.load_problems(ctx.store(), source, ctx.run_ids())
    for row in rejected:
        get_run_logger().warning("set aside %s", row)
    aside = f" ({len(rejected)} rows set aside)" if rejected else ""
    announce(f"problems: {ref.rows} {source.domain} {source.split}{aside} -> {ref.uri}")
    publish(ref, f"{source.domain} problems", {"problems": ref.rows, "set_aside": len(rejected)})
    return ref


@task(name="merge-problem-sets", cache_policy=NO_CACHE)
def merge_problems(ctx: RunContext, sets: list[ArtifactRef]) -> ArtifactRef:
    ref = problems.merge_problems(ctx.store(), sets, ctx.run_ids())
    announce(f"problems: {ref.rows} from {len(sets)} sets -> {ref.uri}")
    publish(ref, "problems", {"problems": ref.rows, "sets": len(sets)})
    return ref


def load_problem_sets(ctx: RunContext, sources: list[ProblemSource]) -> ArtifactRef:
    """Each problem set as its own artifact, then one artifact of all (parents: the sets)."""
    refs = [load_problems(ctx, source) for source in sources]
    return refs[0] if len(refs) == 1 else merge_problems(ctx, refs)


def sample(ctx: RunContext, problems_ref: ArtifactRef, generator: GeneratorSpec,
           config: SamplingConfig) -> ArtifactRef:
    """Sampling fanned out over the flow's task runner, shard by shard."""
    (ref,) = run_sharded(ctx, "sample", (problems_ref, generator, config))
    announce(f"sampled {ref.rows} completions ({config.n} per problem) from {generator.model}")
    publish(ref, "completions", {"completions": ref.rows, "n_per_problem": config.n})
    return ref


def verify(ctx: RunContext, problems_ref: ArtifactRef, completions: ArtifactRef,
           config: VerifyConfig) -> ArtifactRef:
    """Verification fanned out over the flow's task runner, shard by shard."""
    (ref,) = run_sharded(ctx, "verify", (problems_ref, completions, config))
    summary = summarize_verdicts(ctx.store(), ref)
    announce(f"verified {summary['programs']:.0f} programs: mean reward "
             f"{summary['mean_reward']:.3f}, strict pass rate {summary['strict_accuracy']:.3f}")
    if ctx.mlflow_parent_run_id:
        tracking.log_metrics(ctx.mlflow_parent_run_id,
                             {f"verify/{k}": v for k, v in summary.items()})
    publish(ref, "verdicts", summary)
    return ref


@task(name="build-rest-data", cache_policy=NO_CACHE)
def build_rest_data(ctx: RunContext, problems_ref: ArtifactRef, completions: ArtifactRef,
                    verdicts: ArtifactRef, config: RestDataConfig, model: str) -> ArtifactRef:
    ref, stats = rest_data.build_rest_data(ctx.store(), problems_ref, completions, verdicts,
                                           config, model, ctx.run_ids())
    announce(f"ReST {config.mode} data: {stats.get('problems_kept', 0):.0f} of "
             f"{stats.get('problems_seen', 0):.0f} problems kept, {stats.get('rows', 0):.0f} rows")
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
        publish_plot(plot, "reward-distribution", "Stage 1 rewards and per-problem reward std "
                     "(the ReST filter keeps problems right of the threshold)",
                     ctx.mlflow_parent_run_id)


TrainerConfig = GRPOTrainConfig | DPOTrainConfig | SFTTrainConfig


@task(name="train-policy", cache_policy=NO_CACHE)
def train_policy(ctx: RunContext, mode: str, model: str, data: ArtifactRef,
                 problems_refs: list[ArtifactRef], config: TrainerConfig,
                 verify_config: VerifyConfig, work_dir: str) -> ArtifactRef:
    """GRPO, DPO or SFT (by the ReST data mode) as a nested MLflow run with per-step metrics;
    the checkpoint is a `policy` artifact."""
    store = ctx.store()
    params = params_of(config, base_model=model, mode=mode)
    with tracking.run(f"train-{mode}", params, parent_run_id=ctx.mlflow_parent_run_id) as run_id:
        tracking.log_input(run_id, data.uri, data.sha256, f"{mode}_data")
        if mode == "grpo":
            ref, extra = grpo.train_grpo(store, model, data, problems_refs, config,
                                         verify_config, Path(work_dir), ctx.run_ids(run_id),
                                         on_log=step_logger(run_id))
        else:
            ref, extra = dpo_sft.train_preference(store, mode, model, data, config,
                                                  Path(work_dir), ctx.run_ids(run_id),
                                                  on_log=step_logger(run_id))
        tracking.set_tags(run_id, {"restrl.policy_uri": ref.uri})
        tracking.log_model_reference(run_id, "policy", ref.uri,
                                     {k: v for k, v in extra.items() if isinstance(v, int | float)},
                                     params)
    announce(f"{mode.upper()} policy trained on {extra.get('rows_used', 0)} rows -> {ref.uri}")
    publish(ref, f"ReST {mode.upper()} policy", {"rows_used": extra.get("rows_used", 0)})
    return ref
