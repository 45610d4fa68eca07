"""Every flow's parameters (the Prefect form, `restrl run X --set`, `--params-file`).

A flow's parameters are the run settings (given once) plus the step configs themselves; every
field takes effect. Defaults are the original ReST-RL code's; `X.toy()` is the small CPU budget
of `restrl demo` (`restrl run X --preset toy`). This module imports no Prefect, so
`restrl run X --help` can list every field with its help text.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from restrl.evaluation.config import METHODS, EvalConfig
from restrl.registry import POLICY_MODEL, VALUE_MODEL, PromotionRule
from restrl.rest import RestDataConfig
from restrl.sampling import SamplingConfig
from restrl.search import MCTSConfig
from restrl.steps.models import GeneratorSpec
from restrl.steps.problems import ProblemSource
from restrl.steps.value_data import ValueDataConfig
from restrl.steps.verify import VerifyConfig
from restrl.training.grpo import GRPOTrainConfig
from restrl.training.preference import DPOTrainConfig, SFTTrainConfig
from restrl.value.config import ValueModelConfig

STRICT = ConfigDict(extra="forbid")


class RunSettings(BaseModel):
    """Where a run's results go and which runs it belongs to."""

    model_config = STRICT

    store: str | None = Field(None, description="Artifact root: a directory or "
                              "s3://bucket/prefix (default: $RESTRL_ARTIFACTS or "
                              ".restrl/artifacts).")
    experiment: str = Field("restrl", description="MLflow experiment.")
    parent_run_id: str | None = Field(None, description="Nest this flow's MLflow run under "
                                      "this run.")


class TrainingRunSettings(RunSettings):
    """The run settings of a flow that trains: also where its checkpoints go."""

    work_dir: str = Field(".restrl/work", description="Training checkpoints, kept so that an "
                          "interrupted training resumes from its last one.")

    def without_training(self) -> RunSettings:
        """These settings for a flow that does not train (an evaluation)."""
        return RunSettings(**self.model_dump(exclude={"work_dir"}))


def toy_source(split: str, n: int | None, seed: int = 0) -> ProblemSource:
    """Where toy problems of `split` come from (generated; n=None: every combination once)."""
    return ProblemSource(domain="toy", split=split, n=n, seed=seed)


class Stage1Steps(BaseModel):
    """Stage 1's step configs: problems, sampling, ReST data, and the trainer `rest.mode` picks."""

    model_config = STRICT

    problems: list[ProblemSource] = Field(
        default_factory=lambda: [ProblemSource()],
        description="Training problem sets, trained on together (toy train split by default; "
                    "e.g. APPS + BigCodeBench + DS1000 for the seed's `--domain code`).")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig,
                                     description="How the training samples are drawn.")
    rest: RestDataConfig = Field(default_factory=RestDataConfig,
                                 description="ReST data building; `mode` picks the trainer.")
    grpo: GRPOTrainConfig = Field(default_factory=GRPOTrainConfig,
                                  description="GRPO training (rest.mode grpo).")
    dpo: DPOTrainConfig = Field(default_factory=DPOTrainConfig,
                                description="DPO training (rest.mode dpo).")
    sft: SFTTrainConfig = Field(default_factory=SFTTrainConfig,
                                description="SFT training (rest.mode sft).")

    @field_validator("problems", mode="before")
    @classmethod
    def _one_set_is_a_list(cls, value: object) -> object:
        """A single problem set may be given on its own."""
        return [value] if isinstance(value, dict | ProblemSource) else value

    def trainer_config(self) -> GRPOTrainConfig | DPOTrainConfig | SFTTrainConfig:
        """The training config `rest.mode` selects."""
        return {"grpo": self.grpo, "dpo": self.dpo, "sft": self.sft}[self.rest.mode]

    @classmethod
    def toy(cls) -> Stage1Steps:
        return cls(problems=[toy_source("train", 128)], sampling=SamplingConfig.toy(),
                   grpo=GRPOTrainConfig.toy(), dpo=DPOTrainConfig.toy(), sft=SFTTrainConfig.toy())


class SelfTrainingParams(Stage1Steps):
    """Stage 1 (the self-training flow): the step configs above, the policy, the run."""

    generator: GeneratorSpec = Field(default_factory=GeneratorSpec,
                                     description="The policy and its generation backend.")
    verification: VerifyConfig = Field(default_factory=VerifyConfig,
                                       description="How programs are judged.")
    eval_problems: ProblemSource | None = Field(
        None, description="Problems to measure pass@1 on before and after training (None: skip).")
    eval_sampling: SamplingConfig = Field(default_factory=SamplingConfig,
                                          description="How the pass@1 samples are drawn.")
    run: TrainingRunSettings = Field(default_factory=TrainingRunSettings,
                                     description="Store, MLflow, checkpoints.")

    @classmethod
    def toy(cls) -> SelfTrainingParams:
        return cls(**dict(Stage1Steps.toy()), eval_problems=toy_source("test", None),
                   eval_sampling=SamplingConfig.toy_eval())


class Stage2Steps(BaseModel):
    """Stage 2's step configs: the problems searched, the search, the value model."""

    model_config = STRICT

    problems: ProblemSource = Field(default_factory=lambda: ProblemSource(seed=1),
                                    description="Problems to search (toy train split, seed 1).")
    mcts: MCTSConfig = Field(default_factory=MCTSConfig,
                             description="The train-phase search that collects value targets.")
    value_data: ValueDataConfig = Field(default_factory=ValueDataConfig,
                                        description="Which rows the value model learns from.")
    value_model: ValueModelConfig = Field(default_factory=ValueModelConfig,
                                          description="Value-model training.")

    @classmethod
    def toy(cls) -> Stage2Steps:
        # Stage 1's samples as extra rows: held-out AUC 0.597 -> 0.753 on the toy validation
        # split (README, "What the demo shows").
        return cls(problems=toy_source("train", 64, seed=1), mcts=MCTSConfig.toy(),
                   value_data=ValueDataConfig(stage1_samples=True),
                   value_model=ValueModelConfig.toy())


class ValueModelParams(Stage2Steps):
    """Stage 2 (the value-model flow): the step configs above, the policy, the run."""

    generator: GeneratorSpec = Field(default_factory=GeneratorSpec,
                                     description="The policy that expands the trees.")
    value_base_model: str | None = Field(
        None, description="Checkpoint the value model starts from (None: the policy above). "
                          "The original starts from the base policy; the pipeline passes it.")
    verification: VerifyConfig = Field(default_factory=VerifyConfig,
                                       description="How rollouts are judged.")
    stage1_samples: dict[str, str] | None = Field(
        None, description="Artifact URIs of verified samples to learn from too, with "
        "value_data.stage1_samples: {\"problems\": ..., \"completions\": ..., \"verdicts\": ...} "
        "(the pipeline passes Stage 1's).")
    run: TrainingRunSettings = Field(default_factory=TrainingRunSettings,
                                     description="Store, MLflow, checkpoints.")

    @classmethod
    def toy(cls) -> ValueModelParams:
        return cls(**dict(Stage2Steps.toy()))


class EvaluateParams(BaseModel):
    """The evaluation flow: policies, problems, methods and budgets."""

    model_config = STRICT

    problems: ProblemSource = Field(default_factory=lambda: toy_source("test", None),
                                    description="Held-out problems (toy test split).")
    policies: dict[str, str] = Field(
        default_factory=lambda: {"base": "tiny"},
        description="Label -> policy model (tiny, a path, a hub id or a policy artifact URI).")
    backend: str = Field("hf", description="Generation backend of every policy: hf, vllm or "
                         "openai.")
    value_model: str | None = Field(None, description="Value model artifact URI or path (None: "
                                    "best_of_n and vm_mcts are skipped unless "
                                    "eval.reward_model is set).")
    eval: EvalConfig = Field(default_factory=EvalConfig,
                             description="Methods and budgets (the original's by default).")
    verification: VerifyConfig = Field(default_factory=VerifyConfig,
                                       description="How programs are judged.")
    run: RunSettings = Field(default_factory=RunSettings, description="Store and MLflow.")

    @classmethod
    def toy(cls) -> EvaluateParams:
        return cls(eval=toy_eval())


def toy_eval() -> EvalConfig:
    return EvalConfig(methods=list(METHODS),  # the oracle too: it checks the search
                      sampling=SamplingConfig(n=8, temperature=0.7, max_tokens=96), ks=[1, 8],
                      best_of_n=[8], answer_rules=["best", "vote"],
                      mcts=MCTSConfig.toy_test_phase())


class PipelineParams(BaseModel):
    """The whole pipeline: Stage 1 -> Stage 2 -> base vs trained evaluation."""

    model_config = STRICT

    generator: GeneratorSpec = Field(default_factory=GeneratorSpec,
                                     description="The starting policy and its backend.")
    stage1: Stage1Steps = Field(default_factory=Stage1Steps, description="Stage 1 steps.")
    stage2: Stage2Steps = Field(default_factory=Stage2Steps, description="Stage 2 steps.")
    mcts_policy: Literal["trained", "base"] = Field(
        "trained", description="Policy that expands the Stage 2 trees: the Stage 1 policy (the "
                               "one VM-MCTS decodes with) or the base policy (the original "
                               "README's Stage 2 command).")
    value_init: Literal["base", "trained"] = Field(
        "base", description="Checkpoint the value model starts from: the base policy (the "
                            "original's choice) or the Stage 1 policy.")
    eval_problems: ProblemSource = Field(default_factory=lambda: toy_source("test", None),
                                         description="Held-out problems for the evaluation.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation methods and "
                             "budgets.")
    verification: VerifyConfig = Field(default_factory=VerifyConfig,
                                       description="How programs are judged, in every stage.")
    run: TrainingRunSettings = Field(default_factory=TrainingRunSettings,
                                     description="Store, MLflow, checkpoints.")

    @classmethod
    def toy(cls) -> PipelineParams:
        # The value model starts from the Stage 1 policy, chosen on the toy validation split,
        # where it ranked at least as well as from the base policy on every figure (the test
        # split disagrees on some: README, "How to read it").
        return cls(stage1=Stage1Steps.toy(), stage2=Stage2Steps.toy(), eval=toy_eval(),
                   value_init="trained")


class RetrainParams(BaseModel):
    """Scheduled retraining: the pipeline from the champion, promotion on improvement."""

    model_config = STRICT

    pipeline: PipelineParams = Field(
        default_factory=PipelineParams, description="The pipeline; it starts from the champion "
        "policy, or from pipeline.generator.model while there is no champion.")
    validation_problems: ProblemSource = Field(
        default_factory=lambda: toy_source("validation", None), description="Problems the "
        "champion and the challenger are both evaluated on to decide (never the test split).")
    promotion: PromotionRule = Field(default_factory=PromotionRule,
                                     description="When the challenger replaces the champion.")
    policy_name: str = Field(POLICY_MODEL, description="Registered model of the policy.")
    value_model_name: str = Field(VALUE_MODEL, description="Registered model of the value model.")

    @classmethod
    def toy(cls) -> RetrainParams:
        return cls(pipeline=PipelineParams.toy())


FLOW_PARAMS: dict[str, type[BaseModel]] = {
    "self-training": SelfTrainingParams,
    "value-model": ValueModelParams,
    "evaluate": EvaluateParams,
    "pipeline": PipelineParams,
    "retrain": RetrainParams,
}
PRESETS = ("reference", "toy")


def preset(params: type[BaseModel], name: str) -> BaseModel:
    """`name`'s parameters: reference (the original's defaults) or toy (`restrl demo`'s)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {PRESETS}")
    return params() if name == "reference" else params.toy()  # type: ignore[attr-defined]
