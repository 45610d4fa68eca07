"""Stage 2 as a Prefect flow: MCTS value targets -> reward data -> value model."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from pydantic import BaseModel, Field

from restrl import tracking
from restrl.search import MCTSConfig
from restrl.stages import GeneratorSpec, ProblemSource, VerifyConfig, params_of
from restrl.training.value import ValueModelConfig
from tasks.common import make_context
from tasks.stage1 import load_problems
from tasks.stage2 import build_value_data, collect_mcts, train_value_model


class ValueModelParams(BaseModel):
    """Stage 2 parameters (the UI form). Defaults are the original code's; `restrl run
    value-model --preset toy` gives the small budgets of the CPU demo."""

    problems: ProblemSource = Field(default_factory=lambda: ProblemSource(seed=1),
                                    description="Problems to search (toy train split).")
    generator: GeneratorSpec = Field(default_factory=GeneratorSpec,
                                     description="The policy that expands the trees.")
    mcts: MCTSConfig = Field(default_factory=MCTSConfig,
                             description="The train-phase search that collects value targets.")
    shard_problems: int = Field(8, description="Problems per committed search shard.")
    value_model: ValueModelConfig = Field(default_factory=ValueModelConfig,
                                          description="Value-model training.")
    value_base_model: str | None = Field(
        None, description="Checkpoint the value model starts from. The original starts from "
                          "the base policy; the pipeline passes it. None: the policy above.")
    verification: VerifyConfig = Field(default_factory=VerifyConfig)
    store: str | None = None
    work_dir: str = ".restrl/work"
    experiment: str = "restrl"
    parent_run_id: str | None = Field(None, description="Nest under this MLflow run.")


@flow(name="value-model")
def value_model(params: ValueModelParams | None = None) -> dict[str, object]:
    """Collect value targets with MCTS, build reward rows, train the value model."""
    params = params or ValueModelParams()
    with tracking.run("value-model", params_of(
            params.problems, params.mcts, params.value_model, policy=params.generator.model),
            parent_run_id=params.parent_run_id, experiment=params.experiment) as run_id:
        ctx = make_context(params.store, run_id)
        problems = load_problems(ctx, params.problems)
        nodes, completions = collect_mcts(ctx, problems, params.generator, params.mcts,
                                          params.verification, params.shard_problems)
        data = build_value_data(ctx, problems, nodes, completions)
        vm = train_value_model(ctx, params.value_base_model or params.generator.model, data,
                               params.value_model, str(Path(params.work_dir).resolve()))
    return {"problems": problems.uri, "mcts_nodes": nodes.uri,
            "mcts_completions": completions.uri, "value_data": data.uri, "value_model": vm.uri,
            "mlflow_run_id": run_id}


if __name__ == "__main__":
    value_model()
