"""Stage 1 as a Prefect flow: problems -> sample -> verify -> ReST data -> policy training.

Every step is a cached task returning an artifact reference; the flow run is one MLflow parent
run with the training as a nested run. Several problem sets (e.g. APPS + BigCodeBench + DS1000,
the seed's `--domain code`) become one problems artifact whose lineage lists each set. The
training method follows `rest.mode`: GRPO (ReST-GRPO), DPO or SFT, each from the same verified
samples. With `eval_problems` set, the base and trained policies are sampled and verified on
those problems too, and their pass@1 is logged on the parent run.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field, field_validator

from restrl import tracking
from restrl.evaluation import pass_at_1
from restrl.rest import RestDataConfig
from restrl.sampling import SamplingConfig
from restrl.stages import GeneratorSpec, ProblemSource, VerifyConfig, params_of
from restrl.training.grpo import GRPOTrainConfig
from restrl.training.preference import DPOTrainConfig, SFTTrainConfig
from tasks.common import default_task_runner, make_context
from tasks.stage1 import (
    build_rest_data,
    load_problem_sets,
    sample,
    train_policy,
    verify,
)


class SelfTrainingParams(BaseModel):
    """Stage 1 parameters (the UI form): the ReST-RL seed's flags, grouped by step.

    Defaults are the original code's; `restrl run self-training --preset toy` gives the small
    budgets of the CPU demo.
    """

    problems: list[ProblemSource] = Field(
        default_factory=lambda: [ProblemSource()],
        description="Training problem sets, trained on together (toy train split by default; "
                    "e.g. APPS + BigCodeBench + DS1000 for the seed's `--domain code`).")
    eval_problems: ProblemSource | None = Field(
        None, description="Problems to measure pass@1 on before and after training (None: skip).")
    generator: GeneratorSpec = Field(default_factory=GeneratorSpec,
                                     description="The policy and its generation backend.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig,
                                     description="How the training samples are drawn.")
    eval_sampling: SamplingConfig = Field(default_factory=SamplingConfig,
                                          description="How the pass@1 samples are drawn.")
    verification: VerifyConfig = Field(default_factory=VerifyConfig)
    rest: RestDataConfig = Field(default_factory=RestDataConfig,
                                 description="ReST data building; `mode` picks the trainer.")
    grpo: GRPOTrainConfig = Field(default_factory=GRPOTrainConfig,
                                  description="GRPO training (mode grpo).")
    dpo: DPOTrainConfig = Field(default_factory=DPOTrainConfig,
                                description="DPO training (mode dpo).")
    sft: SFTTrainConfig = Field(default_factory=SFTTrainConfig,
                                description="SFT training (mode sft).")
    store: str | None = Field(None, description="Artifact root: a directory or s3://bucket/prefix.")
    work_dir: str = Field(".restrl/work", description="Scratch space for training checkpoints.")
    experiment: str = Field("restrl", description="MLflow experiment.")
    parent_run_id: str | None = Field(None, description="Nest under this MLflow run.")

    @field_validator("problems", mode="before")
    @classmethod
    def _one_set_is_a_list(cls, value: object) -> object:
        """A single problem set may be given on its own."""
        return [value] if isinstance(value, dict | ProblemSource) else value

    def trainer_config(self) -> GRPOTrainConfig | DPOTrainConfig | SFTTrainConfig:
        """The training config `rest.mode` selects."""
        return {"grpo": self.grpo, "dpo": self.dpo, "sft": self.sft}[self.rest.mode]


@flow(name="self-training", task_runner=default_task_runner())
def self_training(params: SelfTrainingParams | None = None) -> dict[str, object]:
    """ReST self-training: sample, verify, build ReST data, train the policy (GRPO/DPO/SFT)."""
    params = params or SelfTrainingParams()
    logger = get_run_logger()
    with tracking.run("self-training", params_of(
            *params.problems, params.sampling, params.rest, params.trainer_config(),
            model=params.generator.model, backend=params.generator.backend),
            parent_run_id=params.parent_run_id, experiment=params.experiment) as parent:
        result = _stage1(make_context(params.store, parent), params, logger)
    result["mlflow_run_id"] = parent
    return result


def _stage1(ctx, params: SelfTrainingParams, logger) -> dict[str, object]:  # noqa: ANN001
    problems = load_problem_sets(ctx, params.problems)
    completions = sample(ctx, problems, params.generator, params.sampling)
    verdicts = verify(ctx, problems, completions, params.verification)
    data = build_rest_data(ctx, problems, completions, verdicts, params.rest,
                           params.generator.model)
    policy = train_policy(ctx, params.rest.mode, params.generator.model, data, [problems],
                          params.trainer_config(), params.verification,
                          str(Path(params.work_dir).resolve()))
    result: dict[str, object] = {"problems": problems.uri, "completions": completions.uri,
                                 "verdicts": verdicts.uri, f"{params.rest.mode}_data": data.uri,
                                 "policy": policy.uri}
    if params.eval_problems is not None:
        eval_set = load_problem_sets(ctx, [params.eval_problems])
        for label, model in (("base", params.generator.model), ("trained", policy.uri)):
            spec = GeneratorSpec(model, params.generator.backend, dict(params.generator.options))
            eval_completions = sample(ctx, eval_set, spec, params.eval_sampling)
            eval_verdicts = verify(ctx, eval_set, eval_completions, params.verification)
            score = pass_at_1(ctx.store().read_table(eval_verdicts).to_pylist())
            logger.info("%s policy pass@1 on %s %s: %.3f", label, params.eval_problems.domain,
                        params.eval_problems.split, score)
            tracking.log_metrics(ctx.mlflow_parent_run_id, {f"eval/{label}_pass_at_1": score})
            result[f"{label}_pass_at_1"] = score
    return result


if __name__ == "__main__":
    self_training()
