"""The whole ReST-RL pipeline: Stage 1 -> Stage 2 -> evaluation of base vs trained policy."""

from __future__ import annotations

from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from flows.evaluate import EvaluateParams, evaluate
from flows.self_training import SelfTrainingParams, self_training
from flows.value_model import ValueModelParams, value_model
from restrl import tracking
from restrl.stages import ProblemSource, VerifyConfig
from restrl.stages_eval import EvalConfig

SUMMARY_ROWS = (
    ("base policy, pass@1", "base", "sample/pass@1"),
    ("after ReST-GRPO, pass@1", "trained", "sample/pass@1"),
    ("best-of-N with the value model", "trained", "best_of_{n}/accuracy"),
    ("VM-MCTS at the same budget", "trained", "vm_mcts/accuracy"),
)


class PipelineParams(BaseModel):
    """The whole pipeline's parameters (the UI form): one section per stage. Defaults are the
    original code's; `restrl run pipeline --preset toy` (what `restrl demo` runs) gives the
    small budgets of the CPU demo."""

    model: str = Field("tiny", description="Starting policy: tiny, a path, a hub id or a URI.")
    backend: str = "hf"
    stage1: SelfTrainingParams = Field(default_factory=SelfTrainingParams)
    stage2: ValueModelParams = Field(default_factory=ValueModelParams)
    mcts_policy: Literal["trained", "base"] = Field(
        "trained", description="Policy that expands the Stage 2 trees: the Stage 1 policy (the "
                               "one VM-MCTS decodes with) or the base policy (the original "
                               "README's Stage 2 command).")
    value_init: Literal["base", "trained"] = Field(
        "base", description="Checkpoint the value model starts from: the base policy (the "
                            "original's choice) or the Stage 1 policy. Ignored when "
                            "stage2.value_base_model is set.")
    eval_problems: ProblemSource = Field(
        default_factory=lambda: ProblemSource(split="test", n=None))
    eval: EvalConfig = Field(default_factory=EvalConfig)
    verification: VerifyConfig = Field(default_factory=VerifyConfig)
    store: str | None = None
    experiment: str = "restrl"


@flow(name="pipeline")
def pipeline(params: PipelineParams | None = None) -> dict[str, object]:
    """ReST-GRPO on the policy, a value model from MCTS on the trained policy, then base vs
    trained with plain sampling, best-of-N and VM-MCTS at the same generation budget."""
    params = params or PipelineParams()
    logger = get_run_logger()
    with tracking.run("pipeline", {"model": params.model, "backend": params.backend},
                      experiment=params.experiment) as run_id:
        # Deep copies: the stage sections are edited below and must not change `params`.
        stage1_params = params.stage1.model_copy(deep=True, update={
            "store": params.store, "parent_run_id": run_id, "experiment": params.experiment,
            "verification": params.verification, "eval_problems": None})
        stage1_params.generator.model = params.model
        stage1_params.generator.backend = params.backend
        stage1 = self_training(stage1_params)
        policy = str(stage1["policy"])
        stage2_params = params.stage2.model_copy(deep=True, update={
            "store": params.store, "parent_run_id": run_id, "experiment": params.experiment,
            "verification": params.verification})
        stage2_params.generator.model = policy if params.mcts_policy == "trained" else params.model
        stage2_params.generator.backend = params.backend
        if stage2_params.value_base_model is None:
            stage2_params.value_base_model = params.model if params.value_init == "base" else policy
        stage2 = value_model(stage2_params)
        evaluation = evaluate(EvaluateParams(
            problems=params.eval_problems, policies={"base": params.model, "trained": policy},
            backend=params.backend, value_model=str(stage2["value_model"]), eval=params.eval,
            verification=params.verification, store=params.store,
            experiment=params.experiment, parent_run_id=run_id))
        summary = summarize(evaluation["results"], params.eval)
        for row in summary:
            tracking.log_metrics(run_id, {f"summary/{row['key']}": row["value"]})
        create_markdown_artifact(summary_markdown(summary), key="pipeline-summary",
                                 description="ReST-RL pipeline results")
        _publish_lineage(params.store, run_id, [policy, str(stage2["value_model"])])
        logger.info("\n%s", summary_markdown(summary))
    return {"policy": policy, "value_model": stage2["value_model"], "summary": summary,
            "evaluation": evaluation["results"], "mlflow_run_id": run_id,
            "stage1": stage1, "stage2": stage2}


def _publish_lineage(store_root: str | None, run_id: str, uris: list[str]) -> None:
    """The graph of the pipeline's outputs (Mermaid) as a Prefect markdown artifact and an
    MLflow artifact of the pipeline run."""
    from restrl.artifacts import ArtifactStore
    from restrl.artifacts.lineage import lineage_mermaid

    store = ArtifactStore(store_root)
    graphs = [lineage_mermaid(store.lineage(uri)) for uri in uris]
    for name, graph in zip(("policy", "value_model"), graphs, strict=True):
        tracking.log_text(run_id, graph, f"lineage/{name}.mmd")
    markdown = "\n\n".join(f"### {name}\n```mermaid\n{graph}\n```"
                            for name, graph in zip(("policy", "value model"), graphs, strict=True))
    create_markdown_artifact(markdown, key="pipeline-lineage",
                             description="Where the trained policy and value model came from")


def summarize(results: dict, config: EvalConfig) -> list[dict[str, object]]:
    """The demo table: label, value, budget (completions generated per problem)."""
    n = max(config.best_of_n) if config.best_of_n else config.sampling.n
    budgets = {"sample/pass@1": 1, "best_of_{n}/accuracy": n,
               "vm_mcts/accuracy": config.mcts_budget()}
    rows = []
    for label, policy, metric in SUMMARY_ROWS:
        key = metric.format(n=n)
        metrics = results.get(policy, {}).get("metrics", {})
        value = metrics.get(key)
        if value is not None:
            rows.append({"label": label, "policy": policy, "key": f"{policy}_{key}",
                         "value": float(value), "budget": budgets[metric],
                         "ci_low": metrics.get(f"{key}_ci_low"),
                         "ci_high": metrics.get(f"{key}_ci_high")})
    return rows


def _interval(row: dict[str, object]) -> str:
    low, high = row.get("ci_low"), row.get("ci_high")
    return f"{float(low):.3f}-{float(high):.3f}" if low is not None and high is not None else "-"


def summary_markdown(rows: list[dict[str, object]]) -> str:
    lines = ["| result | accuracy | 95% CI over problems | completions per problem |",
             "|---|---|---|---|"]
    lines += [f"| {r['label']} | {float(r['value']):.3f} | {_interval(r)} | {r['budget']} |"
              for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    pipeline()
