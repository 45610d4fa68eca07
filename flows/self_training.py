"""Stage 1 as a Prefect flow: problems -> sample -> verify -> ReST data -> policy training.

Every step is a task returning an artifact reference; the flow run is one MLflow parent run with
the training as a nested run. Several problem sets (e.g. APPS + BigCodeBench + DS1000, the
seed's `--domain code`) become one problems artifact whose lineage lists each set. The trainer
follows `rest.mode`: GRPO (ReST-GRPO), DPO or SFT, each from the same verified samples. With
`eval_problems` set, the base and trained policies' pass@1 on them is logged too.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from restrl import tracking
from restrl.artifacts.step import params_of
from restrl.evaluation import pass_at_1
from restrl.steps.models import GeneratorSpec
from restrl_flows.params import SelfTrainingParams
from restrl_tasks.common import RunContext, default_task_runner, make_context
from restrl_tasks.stage1 import build_rest_data, load_problem_sets, sample, train_policy, verify


@flow(name="self-training", task_runner=default_task_runner())
def self_training(params: SelfTrainingParams | None = None) -> dict[str, object]:
    """ReST self-training: sample, verify, build ReST data, train the policy (GRPO/DPO/SFT)."""
    params = params or SelfTrainingParams()
    with tracking.run("self-training", params_of(
            *params.problems, params.sampling, params.rest, params.trainer_config(),
            model=params.generator.model, backend=params.generator.backend),
            parent_run_id=params.run.parent_run_id, experiment=params.run.experiment) as parent:
        result = _stage1(make_context(params.run.store, parent), params)
    result["mlflow_run_id"] = parent
    return result


def _stage1(ctx: RunContext, params: SelfTrainingParams) -> dict[str, object]:
    problems = load_problem_sets(ctx, params.problems)
    completions = sample(ctx, problems, params.generator, params.sampling)
    verdicts = verify(ctx, problems, completions, params.verification)
    data = build_rest_data(ctx, problems, completions, verdicts, params.rest,
                           params.generator.model)
    policy = train_policy(ctx, params.rest.mode, params.generator.model, data, [problems],
                          params.trainer_config(), params.verification,
                          str(Path(params.run.work_dir).resolve()))
    result: dict[str, object] = {"problems": problems.uri, "completions": completions.uri,
                                 "verdicts": verdicts.uri, f"{params.rest.mode}_data": data.uri,
                                 "policy": policy.uri}
    if params.eval_problems is not None:
        result.update(_pass_at_1_before_after(ctx, params, policy.uri))
    return result


def _pass_at_1_before_after(ctx: RunContext, params: SelfTrainingParams,
                            policy: str) -> dict[str, float]:
    logger = get_run_logger()
    eval_set = load_problem_sets(ctx, [params.eval_problems])
    scores = {}
    for label, model in (("base", params.generator.model), ("trained", policy)):
        spec = GeneratorSpec(model, params.generator.backend, dict(params.generator.options))
        completions = sample(ctx, eval_set, spec, params.eval_sampling)
        verdicts = verify(ctx, eval_set, completions, params.verification)
        score = pass_at_1(ctx.store().read_table(verdicts).to_pylist())
        logger.info("%s policy pass@1 on %s %s: %.3f", label, params.eval_problems.domain,
                    params.eval_problems.split, score)
        tracking.log_metrics(ctx.mlflow_parent_run_id, {f"eval/{label}_pass_at_1": score})
        scores[f"{label}_pass_at_1"] = score
    return scores


if __name__ == "__main__":
    self_training()
