"""Stage 2 as a Prefect flow: MCTS value targets -> reward data -> value model."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from restrl import tracking
from restrl.artifacts.step import params_of
from restrl.steps.value_data import VerifiedSamples
from restrl_flows.params import ValueModelParams
from restrl_tasks.common import RunContext, default_task_runner, make_context
from restrl_tasks.stage1 import load_problems
from restrl_tasks.stage2 import build_value_data, collect_mcts, train_value_model


@flow(name="value-model", task_runner=default_task_runner())
def value_model(params: ValueModelParams | None = None) -> dict[str, object]:
    """Collect value targets with MCTS, build reward rows, train the value model."""
    params = params or ValueModelParams()
    with tracking.run("value-model", params_of(
            params.problems, params.mcts, params.value_model, policy=params.generator.model),
            parent_run_id=params.run.parent_run_id, experiment=params.run.experiment) as run_id:
        ctx = make_context(params.run.store, run_id)
        problems = load_problems(ctx, params.problems)
        nodes, completions = collect_mcts(ctx, problems, params.generator, params.mcts,
                                          params.verification)
        data = build_value_data(ctx, problems, nodes, completions, params.value_data,
                                _samples(ctx, params.stage1_samples))
        vm = train_value_model(ctx, params.value_base_model or params.generator.model, data,
                               params.value_model, str(Path(params.run.work_dir).resolve()))
    return {"problems": problems.uri, "mcts_nodes": nodes.uri,
            "mcts_completions": completions.uri, "value_data": data.uri, "value_model": vm.uri,
            "mlflow_run_id": run_id}


def _samples(ctx: RunContext, uris: dict[str, str] | None) -> VerifiedSamples | None:
    if not uris:
        return None
    store = ctx.store()
    refs = {name: store.manifest(uris[name]).ref()
            for name in ("problems", "completions", "verdicts")}
    return VerifiedSamples(**refs)


if __name__ == "__main__":
    value_model()
