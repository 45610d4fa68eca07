"""Evaluation as a Prefect flow: sample / best-of-N / VM-MCTS for one or more policies."""

from __future__ import annotations

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from restrl import tracking
from restrl.stages import GeneratorSpec, ProblemSource, VerifyConfig
from restrl.stages_eval import EvalConfig
from tasks.common import make_context
from tasks.stage1 import load_problems
from tasks.stage2 import evaluate as evaluate_task


class EvaluateParams(BaseModel):
    """Evaluation parameters (the UI form)."""

    problems: ProblemSource = Field(default_factory=lambda: ProblemSource(split="test", n=None),
                                    description="Held-out problems (toy test split).")
    policies: dict[str, str] = Field(
        default_factory=lambda: {"base": "tiny"},
        description="Label -> policy model (tiny, a path, a hub id or a policy artifact URI).")
    backend: str = "hf"
    value_model: str | None = Field(None, description="Value model artifact URI or path.")
    eval: EvalConfig = Field(default_factory=EvalConfig,
                             description="Methods and budgets (the original's by default).")
    verification: VerifyConfig = Field(default_factory=VerifyConfig)
    store: str | None = None
    experiment: str = "restrl"
    parent_run_id: str | None = None


@flow(name="evaluate")
def evaluate(params: EvaluateParams | None = None) -> dict[str, object]:
    """Evaluate each policy with each method; one nested MLflow run per policy."""
    params = params or EvaluateParams()
    with tracking.run("evaluate", {"policies": params.policies},
                      parent_run_id=params.parent_run_id, experiment=params.experiment) as run_id:
        ctx = make_context(params.store, run_id)
        config = params.eval
        skipped = sorted(set(config.methods) - {"sample"})
        if skipped and params.value_model is None and config.reward_model is None:
            get_run_logger().warning("no value_model or reward_model given: skipping %s",
                                     ", ".join(skipped))
            config = EvalConfig(**{**config.__dict__, "methods": ["sample"]})
        problems = load_problems(ctx, params.problems)
        results = {label: evaluate_task(ctx, label, problems,
                                        GeneratorSpec(model, params.backend), params.value_model,
                                        config, params.verification)
                   for label, model in params.policies.items()}
    return {"problems": problems.uri, "results": results, "mlflow_run_id": run_id}


if __name__ == "__main__":
    evaluate()
