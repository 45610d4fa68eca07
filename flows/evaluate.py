"""Evaluation as a Prefect flow: sample / best-of-N / VM-MCTS for one or more policies."""

from __future__ import annotations

from prefect import flow, get_run_logger

from restrl import tracking
from restrl.steps.models import GeneratorSpec
from restrl_flows.params import EvaluateParams
from restrl_tasks.common import make_context
from restrl_tasks.stage1 import load_problems
from restrl_tasks.stage2 import evaluate as evaluate_task


@flow(name="evaluate")
def evaluate(params: EvaluateParams | None = None) -> dict[str, object]:
    """Evaluate each policy with each method; one nested MLflow run per policy.

    Without a value model or reward model the scored methods cannot run: they are skipped with
    a warning, and the result's `skipped` lists them.
    """
    params = params or EvaluateParams()
    config, skipped = params.eval, []
    if params.value_model is None and config.reward_model is None:
        config, skipped = config.without_scorer()
        if skipped:
            get_run_logger().warning("no value_model or reward_model given: skipping %s",
                                     ", ".join(skipped))
    with tracking.run("evaluate", {"policies": params.policies, "skipped": skipped},
                      parent_run_id=params.run.parent_run_id,
                      experiment=params.run.experiment) as run_id:
        ctx = make_context(params.run.store, run_id)
        problems = load_problems(ctx, params.problems)
        results = {label: evaluate_task(ctx, label, problems,
                                        GeneratorSpec(model, params.backend), params.value_model,
                                        config, params.verification)
                   for label, model in params.policies.items()}
    return {"problems": problems.uri, "results": results, "skipped": skipped,
            "mlflow_run_id": run_id}


if __name__ == "__main__":
    evaluate()
