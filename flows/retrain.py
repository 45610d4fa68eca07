"""Scheduled retraining: the pipeline from the champion, promotion only on a significant gain.

The champion (the pipeline's starting policy) and the challenger (its trained policy) are
evaluated in this run on the same validation problems; `restrl.registry.decide` promotes when
the paired gain is above `promotion.min_improvement` and significant at
`promotion.confidence`. The pipeline's test-split figures are reported, never used to decide.

Weekly by default (`WEEKLY_CRON`); schedules need a Prefect server (`prefect server start`), then
`python -m restrl_flows.retrain` serves the deployment, or use the one in prefect.yaml.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from restrl import registry
from restrl.artifacts import ArtifactStore
from restrl.evaluation.paired import compare_paired, problem_scores
from restrl_flows.evaluate import evaluate
from restrl_flows.params import EvaluateParams, RetrainParams
from restrl_flows.pipeline import pipeline

WEEKLY_CRON = "0 3 * * 1"  # Mondays 03:00
FALLBACK_METRIC = "sample/pass@1"


def starting_model(fallback: str = "tiny", name: str = registry.POLICY_MODEL) -> str:
    """The champion policy's artifact URI, or `fallback` when there is no champion yet."""
    champion = registry.current_champion(name)
    return champion.artifact_uri if champion else fallback


def method_of(metric: str) -> tuple[str, int | None]:
    """The eval_results rows a metric is computed from: sample/pass@1 -> ("sample", None),
    best_of_8/accuracy -> ("best_of_n", 8), best_of_8_vote/accuracy -> ("best_of_n_vote", 8),
    majority_of_8/accuracy -> ("majority_vote", 8), vm_mcts/accuracy -> ("vm_mcts", None)."""
    head = metric.split("/")[0]
    vote = "_vote" if head.endswith("_vote") else ""
    head = head.removesuffix(vote)
    for prefix, method in (("best_of_", "best_of_n"), ("majority_of_", "majority_vote")):
        if head.startswith(prefix):
            return method + vote, int(head.removeprefix(prefix))
    return head + vote, None


@flow(name="retrain")
def retrain(params: RetrainParams | None = None) -> dict[str, object]:
    """Pipeline from the champion; both policies on the validation problems; register the
    results as challengers; promote on a significant gain."""
    params = params or RetrainParams()
    logger = get_run_logger()
    champion = registry.current_champion(params.policy_name)
    start = champion.artifact_uri if champion else params.pipeline.generator.model
    logger.info("starting policy: %s", start)
    generator = replace(params.pipeline.generator, model=start)
    result = pipeline(params.pipeline.model_copy(update={"generator": generator}))
    test_metrics = result["evaluation"]["trained"]["metrics"]
    rule, notes = params.promotion, []
    if rule.metric not in test_metrics:
        notes.append(f"the evaluation has no {rule.metric}; compared on {FALLBACK_METRIC}")
        logger.warning(notes[-1])
        rule = replace(rule, metric=FALLBACK_METRIC)
    comparison = None
    if champion is not None:
        comparison = _compare_on_validation(params, start, str(result["policy"]),
                                            str(result["value_model"]), rule.metric)
    decision = registry.promote_if_better(
        str(result["policy"]), str(result["value_model"]), str(result["mlflow_run_id"]),
        comparison, rule, {f"test/{k}": v for k, v in test_metrics.items()},
        policy_name=params.policy_name, value_model_name=params.value_model_name)
    logger.info("promote=%s: %s", decision.promote, decision.reason)
    summary = {**asdict(decision), "starting_model": start, "metric": rule.metric,
               "test_metric": test_metrics.get(rule.metric), "notes": notes}
    create_markdown_artifact("\n".join(f"- **{k}**: {v}" for k, v in summary.items()),
                             key="retrain-decision", description="Promotion decision")
    return summary


def _compare_on_validation(params: RetrainParams, champion_policy: str, challenger_policy: str,
                           challenger_vm: str, metric: str):  # noqa: ANN202
    """Champion (with its own value model, else the new one) and challenger (with the new one)
    on the validation problems."""
    champion_vm = registry.current_champion(params.value_model_name)
    pairs = {"champion": (champion_policy,
                          champion_vm.artifact_uri if champion_vm else challenger_vm),
             "challenger": (challenger_policy, challenger_vm)}
    method, budget = method_of(metric)
    store = ArtifactStore(params.pipeline.run.store)
    scores = {}
    for label, (policy, value_model) in pairs.items():
        evaluation = evaluate(EvaluateParams(
            problems=params.validation_problems, policies={label: policy},
            backend=params.pipeline.generator.backend, value_model=value_model,
            eval=params.pipeline.eval, verification=params.pipeline.verification,
            run=params.pipeline.run.without_training()))
        rows = store.read_table(evaluation["results"][label]["eval_results"]).to_pylist()
        scores[label] = problem_scores(rows, method, budget)
    return compare_paired(scores["champion"], scores["challenger"])


if __name__ == "__main__":
    retrain.serve(name="retrain-weekly", cron=WEEKLY_CRON)
