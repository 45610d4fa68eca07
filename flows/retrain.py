"""Scheduled retraining: rerun the pipeline from the champion policy, promote only on improvement.

Weekly by default (`WEEKLY_CRON`); schedules need a Prefect server (`prefect server start`), then
`python -m restrl_flows.retrain` serves the deployment, or use the one in prefect.yaml.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from prefect import flow, get_run_logger

from restrl import registry
from restrl_flows.params import RetrainParams
from restrl_flows.pipeline import pipeline

WEEKLY_CRON = "0 3 * * 1"  # Mondays 03:00
FALLBACK_METRIC = "sample/pass@1"


def starting_model(fallback: str = "tiny", name: str = registry.POLICY_MODEL) -> str:
    """The champion policy's artifact URI, or `fallback` when there is no champion yet."""
    champion = registry.current_champion(name)
    return champion.artifact_uri if champion else fallback


@flow(name="retrain")
def retrain(params: RetrainParams | None = None) -> dict[str, object]:
    """Pipeline from the champion; register the results as challengers; promote on improvement.

    When the evaluation lacks `promotion.metric` the comparison falls back to sample/pass@1,
    with a warning and a note in the result.
    """
    params = params or RetrainParams()
    logger = get_run_logger()
    model = starting_model(params.pipeline.generator.model, params.policy_name)
    logger.info("starting policy: %s", model)
    generator = replace(params.pipeline.generator, model=model)
    result = pipeline(params.pipeline.model_copy(update={"generator": generator}))
    metrics = result["evaluation"]["trained"]["metrics"]
    rule, notes = params.promotion, []
    if rule.metric not in metrics:
        notes.append(f"the evaluation has no {rule.metric}; compared on {FALLBACK_METRIC}")
        logger.warning(notes[-1])
        rule = replace(rule, metric=FALLBACK_METRIC)
    decision = registry.promote_if_better(
        str(result["policy"]), str(result["value_model"]), str(result["mlflow_run_id"]),
        float(metrics[rule.metric]), rule, metrics,
        policy_name=params.policy_name, value_model_name=params.value_model_name)
    logger.info("promote=%s: %s", decision.promote, decision.reason)
    return {**asdict(decision), "starting_model": model, "metric": rule.metric, "notes": notes}


if __name__ == "__main__":
    retrain.serve(name="retrain-weekly", cron=WEEKLY_CRON)
