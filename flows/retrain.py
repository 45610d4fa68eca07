"""Scheduled retraining: rerun the pipeline from the champion policy, promote only on improvement.

Weekly by default (`WEEKLY_CRON`); schedules need a Prefect server (`prefect server start`), then
`python -m flows.retrain` serves the deployment, or use the one in prefect.yaml.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from flows.pipeline import PipelineParams, pipeline
from restrl import registry

WEEKLY_CRON = "0 3 * * 1"  # Mondays 03:00
FALLBACK_METRIC = "sample/pass@1"


class RetrainParams(BaseModel):
    """Retraining parameters (the UI form)."""

    pipeline: PipelineParams = Field(default_factory=PipelineParams,
                                     description="The pipeline's parameters; `model` is replaced "
                                                 "by the champion policy.")
    metric: str = Field("vm_mcts/accuracy", description="Trained policy's metric to compare "
                        f"(falls back to {FALLBACK_METRIC} when the evaluation lacks it).")
    min_improvement: float = Field(0.0, ge=0.0, description="Promote only when the challenger "
                                   "beats the champion by more than this.")
    fallback_model: str = Field("tiny", description="Starting policy when there is no champion.")
    policy_name: str = registry.POLICY_MODEL
    value_model_name: str = registry.VALUE_MODEL


def starting_model(fallback: str = "tiny", name: str = registry.POLICY_MODEL) -> str:
    """The champion policy's artifact URI, or `fallback` when there is no champion yet."""
    champion = registry.current_champion(name)
    return champion.artifact_uri if champion else fallback


@flow(name="retrain")
def retrain(params: RetrainParams | None = None) -> dict[str, object]:
    """Pipeline from the champion; register the results as challengers; promote on improvement."""
    params = params or RetrainParams()
    logger = get_run_logger()
    model = starting_model(params.fallback_model, params.policy_name)
    logger.info("starting policy: %s", model)
    result = pipeline(params.pipeline.model_copy(update={"model": model}))
    metrics = result["evaluation"]["trained"]["metrics"]
    metric = params.metric if params.metric in metrics else FALLBACK_METRIC
    if metric != params.metric:
        logger.warning("the evaluation has no %s; comparing on %s instead", params.metric, metric)
    decision = registry.promote_if_better(
        str(result["policy"]), str(result["value_model"]), str(result["mlflow_run_id"]),
        float(metrics[metric]), registry.PromotionRule(metric, params.min_improvement), metrics,
        policy_name=params.policy_name, value_model_name=params.value_model_name)
    logger.info("promote=%s: %s", decision.promote, decision.reason)
    return {**asdict(decision), "starting_model": model, "metric": metric}


if __name__ == "__main__":
    retrain.serve(name="retrain-weekly", cron=WEEKLY_CRON)
