"""Stage 1 as a Prefect flow: problems -> sample -> verify -> ReST data -> GRPO -> policy.

Every step is a cached task returning an artifact reference; the flow run is one MLflow parent
run with the training as a nested run. With `eval_problems` set, the base and trained policies
are sampled and verified on those problems too, and their pass@1 is logged on the parent run.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from restrl import tracking
from restrl.rest import RestDataConfig
from restrl.sampling import SamplingConfig
from restrl.stages import GeneratorSpec, ProblemSource, VerifyConfig, params_of
from restrl.training.grpo import GRPOTrainConfig
from tasks.common import default_task_runner, make_context
from tasks.stage1 import build_rest_data, load_problems, sample, train_grpo, verify


def toy_sampling() -> SamplingConfig:
    return SamplingConfig(n=8, temperature=1.0, max_tokens=96, problems_per_call=16,
                          shard_problems=16)


def toy_grpo() -> GRPOTrainConfig:
    """Sizes that train the embedded tiny model on 2 CPU cores in a few minutes."""
    return GRPOTrainConfig(max_prompt_length=512, max_completion_length=96, num_generations=8,
                           temperature=1.0, learning_rate=1e-4, epochs=1.0, max_steps=-1,
                           save_steps=0, batch_size_per_device=16,
                           gradient_accumulation_steps=1, beta=0.0, loss_type="dapo")


class SelfTrainingParams(BaseModel):
    """Stage 1 parameters (the UI form): the ReST-RL seed's flags, grouped by step."""

    problems: ProblemSource = Field(default_factory=lambda: ProblemSource(n=128),
                                    description="Training problems (toy train split by default).")
    eval_problems: ProblemSource | None = Field(
        default_factory=lambda: ProblemSource(split="test", n=None),
        description="Problems to measure pass@1 on before and after training (None: skip).")
    generator: GeneratorSpec = Field(default_factory=GeneratorSpec,
                                     description="The policy and its generation backend.")
    sampling: SamplingConfig = Field(default_factory=toy_sampling)
    eval_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(n=4, temperature=0.7, max_tokens=96))
    verification: VerifyConfig = Field(default_factory=VerifyConfig)
    rest: RestDataConfig = Field(default_factory=RestDataConfig)
    grpo: GRPOTrainConfig = Field(default_factory=toy_grpo)
    store: str | None = Field(None, description="Artifact root: a directory or s3://bucket/prefix.")
    work_dir: str = Field(".restrl/work", description="Scratch space for training checkpoints.")
    experiment: str = Field("restrl", description="MLflow experiment.")
    parent_run_id: str | None = Field(None, description="Nest under this MLflow run.")


@flow(name="self-training", task_runner=default_task_runner())
def self_training(params: SelfTrainingParams | None = None) -> dict[str, object]:
    """ReST-GRPO: sample, verify, build ReST data, train the policy with GRPO."""
    params = params or SelfTrainingParams()
    logger = get_run_logger()
    with tracking.run("self-training", params_of(
            params.problems, params.sampling, params.rest, params.grpo,
            model=params.generator.model, backend=params.generator.backend),
            parent_run_id=params.parent_run_id, experiment=params.experiment) as parent:
        result = _stage1(make_context(params.store, parent), params, logger)
    result["mlflow_run_id"] = parent
    return result


def _stage1(ctx, params: SelfTrainingParams, logger) -> dict[str, object]:  # noqa: ANN001
    problems = load_problems(ctx, params.problems)
    completions = sample(ctx, problems, params.generator, params.sampling)
    verdicts = verify(ctx, problems, completions, params.verification)
    data = build_rest_data(ctx, problems, completions, verdicts, params.rest,
                           params.generator.model)
    policy = train_grpo(ctx, params.generator.model, data, [problems], params.grpo,
                        params.verification, str(Path(params.work_dir).resolve()))
    result: dict[str, object] = {"problems": problems.uri, "completions": completions.uri,
                                 "verdicts": verdicts.uri, "grpo_data": data.uri,
                                 "policy": policy.uri}
    if params.eval_problems is not None:
        eval_set = load_problems(ctx, params.eval_problems)
        for label, model in (("base", params.generator.model), ("trained", policy.uri)):
            spec = GeneratorSpec(model, params.generator.backend, dict(params.generator.options))
            eval_completions = sample(ctx, eval_set, spec, params.eval_sampling)
            eval_verdicts = verify(ctx, eval_set, eval_completions, params.verification)
            pass_at_1 = _pass_at_1(ctx, eval_verdicts)
            logger.info("%s policy pass@1 on %s %s: %.3f", label, params.eval_problems.domain,
                        params.eval_problems.split, pass_at_1)
            tracking.log_metrics(ctx.mlflow_parent_run_id, {f"eval/{label}_pass_at_1": pass_at_1})
            result[f"{label}_pass_at_1"] = pass_at_1
    return result


def _pass_at_1(ctx, verdicts) -> float:  # noqa: ANN001
    """Mean over problems of the fraction of strict passes among its samples (unbiased pass@1)."""
    rows = ctx.store().read_table(verdicts).to_pylist()
    by_problem: dict[str, list[bool]] = {}
    for row in rows:
        by_problem.setdefault(row["problem_id"], []).append(row["strict"])
    return sum(sum(v) / len(v) for v in by_problem.values()) / max(1, len(by_problem))


if __name__ == "__main__":
    self_training()
