"""Stage 2 and evaluation tasks: MCTS collection, reward data, value model, evaluation."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from restrl import tracking
from restrl.artifacts import ArtifactRef
from restrl.artifacts.step import params_of
from restrl.evaluation.config import EvalConfig
from restrl.search import MCTSConfig
from restrl.steps import evaluate as evaluate_step
from restrl.steps import value_data, value_model
from restrl.steps.models import GeneratorSpec
from restrl.steps.value_data import ValueDataConfig, VerifiedSamples
from restrl.steps.verify import VerifyConfig
from restrl.value.config import ValueModelConfig
from restrl_tasks.common import RunContext, announce, publish, publish_plot, step_logger
from restrl_tasks.shards import run_sharded


def collect_mcts(ctx: RunContext, problems: ArtifactRef, generator: GeneratorSpec,
                 config: MCTSConfig, verify_config: VerifyConfig
                 ) -> tuple[ArtifactRef, ArtifactRef]:
    """Train-phase MCTS fanned out over the flow's task runner, a shard of problems at a time."""
    nodes, completions = run_sharded(ctx, "mcts", (problems, generator, config),
                                     (problems, generator, config, verify_config))
    announce(f"MCTS: {nodes.rows} tree nodes, {completions.rows} verified completions")
    publish(nodes, "MCTS trees", {"nodes": nodes.rows, "completions": completions.rows})
    return nodes, completions


@task(name="build-value-data", cache_policy=NO_CACHE)
def build_value_data(ctx: RunContext, problems: ArtifactRef, nodes: ArtifactRef,
                     completions: ArtifactRef, config: ValueDataConfig,
                     samples: VerifiedSamples | None) -> ArtifactRef:
    ref, stats = value_data.build_value_data(ctx.store(), problems, nodes, completions, config,
                                             samples, ctx.run_ids())
    announce(f"value data: {stats.get('rows', 0):.0f} rows "
             f"({stats.get('rows_terminal', 0):.0f} terminal), mean reward "
             f"{stats.get('mean_reward', 0):.3f}")
    if ctx.mlflow_parent_run_id:
        tracking.log_metrics(ctx.mlflow_parent_run_id, {f"value_data/{k}": v
                                                        for k, v in stats.items()})
    publish(ref, "value-model training rows", stats)
    return ref


@task(name="train-value-model", cache_policy=NO_CACHE)
def train_value_model(ctx: RunContext, base_model: str, data: ArtifactRef,
                      config: ValueModelConfig, work_dir: str) -> ArtifactRef:
    params = params_of(config, base_model=base_model)
    with tracking.run("train-value-model", params,
                      parent_run_id=ctx.mlflow_parent_run_id) as run_id:
        tracking.log_input(run_id, data.uri, data.sha256, "value_data")
        ref, metrics = value_model.train_value(ctx.store(), base_model, data, config,
                                               Path(work_dir), ctx.run_ids(run_id),
                                               step_logger(run_id))
        tracking.log_metrics(run_id, metrics)
        tracking.set_tags(run_id, {"restrl.value_model_uri": ref.uri})
        tracking.log_model_reference(run_id, "value_model", ref.uri, metrics, params)
    announce(f"value model trained: held-out MSE {metrics.get('before/mse', float('nan')):.4f} "
             f"-> {metrics.get('after/mse', float('nan')):.4f} -> {ref.uri}")
    publish(ref, "value model", metrics)
    return ref


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(ctx: RunContext, label: str, problems: ArtifactRef, generator: GeneratorSpec,
             value_model_uri: str | None, config: EvalConfig,
             verify_config: VerifyConfig) -> dict[str, object]:
    """One nested MLflow run per evaluated policy, with metrics and the accuracy plot."""
    from restrl.evaluation.plots import plot_accuracy_vs_budget, plot_calibration

    with tracking.run(f"evaluate-{label}", params_of(
            config, policy=generator.model, value_model=value_model_uri or ""),
            parent_run_id=ctx.mlflow_parent_run_id) as run_id:
        tracking.log_input(run_id, problems.uri, problems.sha256, "eval_problems", "evaluation")
        result = evaluate_step.evaluate(ctx.store(), problems, generator, value_model_uri,
                                        config, verify_config, ctx.run_ids(run_id))
        ref, metrics, points = result.ref, result.metrics, result.points
        tracking.log_metrics(run_id, metrics)
        with tempfile.TemporaryDirectory() as tmp:
            plot = plot_accuracy_vs_budget({label: points}, Path(tmp) / "accuracy_vs_budget.png",
                                           title=f"{label}: accuracy vs generation budget")
            tracking.log_artifact_file(run_id, plot, "plots")
            if result.calibration:
                plot = plot_calibration(result.calibration, Path(tmp) / "value_calibration.png",
                                        title=f"{label}: value model on held-out completions")
                publish_plot(plot, f"calibration-{label}", f"Value model calibration on the "
                             f"{label} policy's held-out completions", run_id)
        tracking.set_tags(run_id, {"restrl.eval_results_uri": ref.uri})
    announce(f"evaluated {label}: " + ", ".join(
        f"{key} {value:.3f}" for key, value in metrics.items()
        if key.endswith(("pass@1", "/accuracy"))))
    publish(ref, f"evaluation of {label}", metrics)
    return {"eval_results": ref.uri, "metrics": metrics, "points": points,
            "mlflow_run_id": run_id}
