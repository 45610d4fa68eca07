"""Stage 2 and evaluation tasks: MCTS collection, reward data, value model, evaluation."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import get_run_logger, task

from restrl import stages_eval, stages_value, tracking
from restrl.artifacts import ArtifactRef
from restrl.search import MCTSConfig
from restrl.stages import GeneratorSpec, VerifyConfig, params_of
from restrl.stages_eval import EvalConfig
from restrl.training.value import ValueModelConfig
from tasks.common import CACHE, RunContext, publish, step_logger


@task(name="collect-mcts", cache_policy=CACHE, persist_result=True)
def collect_mcts(ctx: RunContext, problems: ArtifactRef, generator: GeneratorSpec,
                 config: MCTSConfig, verify_config: VerifyConfig,
                 shard_problems: int) -> tuple[ArtifactRef, ArtifactRef]:
    logger = get_run_logger()
    nodes, completions = stages_value.collect_mcts(
        ctx.store(), problems, generator, config, verify_config, shard_problems, ctx.run_ids(),
        on_shard=lambda i, n: logger.info("searched shard %d/%d", i + 1, n))
    logger.info("MCTS: %d nodes, %d completions", nodes.rows, completions.rows)
    publish(nodes, "MCTS trees", {"nodes": nodes.rows, "completions": completions.rows})
    return nodes, completions


@task(name="build-value-data", cache_policy=CACHE, persist_result=True)
def build_value_data(ctx: RunContext, problems: ArtifactRef, nodes: ArtifactRef,
                     completions: ArtifactRef) -> ArtifactRef:
    ref, stats = stages_value.build_value_data(ctx.store(), problems, nodes, completions,
                                               ctx.run_ids())
    get_run_logger().info("value data: %s -> %s", stats, ref.uri)
    if ctx.mlflow_parent_run_id:
        tracking.log_metrics(ctx.mlflow_parent_run_id, {f"value_data/{k}": v
                                                        for k, v in stats.items()})
    publish(ref, "value-model training rows", stats)
    return ref


@task(name="train-value-model", cache_policy=CACHE, persist_result=True)
def train_value_model(ctx: RunContext, base_model: str, data: ArtifactRef,
                      config: ValueModelConfig, work_dir: str) -> ArtifactRef:
    with tracking.run("train-value-model", params_of(config, base_model=base_model),
                      parent_run_id=ctx.mlflow_parent_run_id) as run_id:
        tracking.log_input(run_id, data.uri, data.sha256, "value_data")
        ref, metrics = stages_value.train_value(ctx.store(), base_model, data, config,
                                                Path(work_dir), ctx.run_ids(run_id),
                                                step_logger(run_id))
        tracking.log_metrics(run_id, metrics)
        tracking.set_tags(run_id, {"restrl.value_model_uri": ref.uri})
        tracking.log_model_reference(run_id, "value_model", ref.uri, metrics,
                                     params_of(config, base_model=base_model))
    get_run_logger().info("value model -> %s (%s)", ref.uri, metrics)
    publish(ref, "value model", metrics)
    return ref


@task(name="evaluate", cache_policy=CACHE, persist_result=True)
def evaluate(ctx: RunContext, label: str, problems: ArtifactRef, generator: GeneratorSpec,
             value_model: str | None, config: EvalConfig,
             verify_config: VerifyConfig) -> dict[str, object]:
    """One nested MLflow run per evaluated policy, with metrics and the accuracy plot."""
    from restrl.evaluation.plots import plot_accuracy_vs_budget

    with tracking.run(f"evaluate-{label}", params_of(
            config, policy=generator.model, value_model=value_model or ""),
            parent_run_id=ctx.mlflow_parent_run_id) as run_id:
        tracking.log_input(run_id, problems.uri, problems.sha256, "eval_problems", "evaluation")
        ref, metrics, points = stages_eval.evaluate(ctx.store(), problems, generator,
                                                    value_model, config, verify_config,
                                                    ctx.run_ids(run_id))
        tracking.log_metrics(run_id, metrics)
        with tempfile.TemporaryDirectory() as tmp:
            plot = plot_accuracy_vs_budget(points, Path(tmp) / "accuracy_vs_budget.png",
                                           title=f"{label}: accuracy vs generation budget")
            tracking.log_artifact_file(run_id, plot, "plots")
        tracking.set_tags(run_id, {"restrl.eval_results_uri": ref.uri})
    get_run_logger().info("%s: %s", label, metrics)
    publish(ref, f"evaluation of {label}", metrics)
    return {"eval_results": ref.uri, "metrics": metrics, "mlflow_run_id": run_id}
