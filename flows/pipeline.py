"""The whole ReST-RL pipeline: Stage 1 -> Stage 2 -> evaluation of base vs trained policy."""

from __future__ import annotations

import math
from dataclasses import replace

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from restrl import tracking
from restrl.evaluation.config import EvalConfig
from restrl_flows.evaluate import evaluate
from restrl_flows.params import (
    EvaluateParams,
    PipelineParams,
    RunSettings,
    SelfTrainingParams,
    ValueModelParams,
)
from restrl_flows.self_training import self_training
from restrl_flows.value_model import value_model

# (label, policy, metric, the metric prefix whose completions/tokens it spent); {n} is the
# largest best-of-N. The weighted-vote rows are there when eval.answer_rules has "vote"; the
# majority vote needs no scorer, so a weighted vote's gain over it is the value model's. The
# oracle rows use the verifier where a method would use the value model: what the search or the
# selection could reach with a perfect value function.
SUMMARY_ROWS = (
    ("base policy, pass@1", "base", "sample/pass@1", "sample"),
    ("after ReST-GRPO, pass@1", "trained", "sample/pass@1", "sample"),
    ("majority vote of N samples (no value model)", "trained", "majority_of_{n}/accuracy",
     "majority_of_{n}"),
    ("best-of-N with the value model", "trained", "best_of_{n}/accuracy", "best_of_{n}"),
    ("best-of-N, votes weighted by the value model", "trained", "best_of_{n}_vote/accuracy",
     "best_of_{n}_vote"),
    ("VM-MCTS at the same budget", "trained", "vm_mcts/accuracy", "vm_mcts"),
    ("VM-MCTS, answer by weighted vote", "trained", "vm_mcts_vote/accuracy", "vm_mcts_vote"),
    ("oracle: best-of-N with the verifier (pass@N)", "trained", "sample/pass@{n}",
     "majority_of_{n}"),  # the same first N samples
    ("oracle: MCTS valued by the verifier", "trained", "oracle_mcts/accuracy", "oracle_mcts"),
)


@flow(name="pipeline")
def pipeline(params: PipelineParams | None = None) -> dict[str, object]:
    """ReST-GRPO on the policy, a value model from MCTS, then base vs trained with plain
    sampling, best-of-N and VM-MCTS at the same generation budget."""
    params = params or PipelineParams()
    logger = get_run_logger()
    with tracking.run("pipeline", {"model": params.generator.model,
                                   "backend": params.generator.backend},
                      parent_run_id=params.run.parent_run_id,
                      experiment=params.run.experiment) as run_id:
        nested = params.run.model_copy(update={"parent_run_id": run_id})
        stage1 = self_training(SelfTrainingParams(
            **dict(params.stage1), generator=params.generator,
            verification=params.verification, run=nested))
        policy = str(stage1["policy"])
        base = params.generator.model
        stage2 = value_model(ValueModelParams(
            **dict(params.stage2), verification=params.verification, run=nested,
            generator=replace(params.generator,
                              model=policy if params.mcts_policy == "trained" else base),
            value_base_model=base if params.value_init == "base" else policy,
            stage1_samples={name: str(stage1[name])
                            for name in ("problems", "completions", "verdicts")}))
        evaluation = evaluate(EvaluateParams(
            problems=params.eval_problems, policies={"base": base, "trained": policy},
            backend=params.generator.backend, value_model=str(stage2["value_model"]),
            eval=params.eval, verification=params.verification,
            run=nested.without_training()))
        summary = summarize(evaluation["results"], params.eval)
        for row in summary:
            tracking.log_metrics(run_id, {f"summary/{row['key']}": row["value"]})
        create_markdown_artifact(summary_markdown(summary), key="pipeline-summary",
                                 description="ReST-RL pipeline results")
        _publish_lineage(params.run, run_id, [policy, str(stage2["value_model"])])
        _publish_curves(evaluation["results"], run_id)
        logger.info("\n%s", summary_markdown(summary))
    trained = evaluation["results"].get("trained", {}).get("metrics", {})
    return {"policy": policy, "value_model": stage2["value_model"], "summary": summary,
            "value_model_auc": _measured(trained.get("value_model/auc")),
            "value_model_within_problem_auc":
                _measured(trained.get("value_model/within_problem_auc")),
            "evaluation": evaluation["results"], "mlflow_run_id": run_id,
            "stage1": stage1, "stage2": stage2}


def _measured(value: float | None) -> float | None:
    """None where a figure could not be measured (NaN: e.g. no problem with a passing and a
    failing sample), so the summary stays valid JSON and says "-"."""
    return None if value is None or math.isnan(value) else value


def _publish_lineage(run: RunSettings, run_id: str, uris: list[str]) -> None:
    """The graph of the pipeline's outputs (Mermaid) as a Prefect markdown artifact and an
    MLflow artifact of the pipeline run."""
    from restrl.artifacts import ArtifactStore
    from restrl.artifacts.lineage import lineage_mermaid

    store = ArtifactStore(run.store)
    graphs = [lineage_mermaid(store.lineage(uri)) for uri in uris]
    for name, graph in zip(("policy", "value_model"), graphs, strict=True):
        tracking.log_text(run_id, graph, f"lineage/{name}.mmd")
    markdown = "\n\n".join(f"### {name}\n```mermaid\n{graph}\n```"
                            for name, graph in zip(("policy", "value model"), graphs, strict=True))
    create_markdown_artifact(markdown, key="pipeline-lineage",
                             description="Where the trained policy and value model came from")


def _publish_curves(results: dict, run_id: str) -> None:
    """Base and trained accuracy-vs-budget curves on one figure (Prefect and MLflow)."""
    import tempfile
    from pathlib import Path

    from restrl.evaluation.plots import plot_accuracy_vs_budget
    from restrl_tasks.common import publish_plot

    curves = {label: [tuple(p) for p in result.get("points", [])]
              for label, result in results.items()}
    with tempfile.TemporaryDirectory() as tmp:
        plot = plot_accuracy_vs_budget(curves, Path(tmp) / "accuracy_vs_budget.png",
                                       title="base vs trained: accuracy vs generation budget")
        publish_plot(plot, "accuracy-vs-budget", "Accuracy vs generation budget, base and "
                     "trained policy", run_id)


def summarize(results: dict, config: EvalConfig) -> list[dict[str, object]]:
    """The demo table, one row per method: label, value, its 95% interval over problems, and
    the completions and tokens it generated per problem."""
    n = max(config.best_of_n) if config.best_of_n else config.sampling.n
    rows = []
    for label, policy, metric, spent in SUMMARY_ROWS:
        key, spent = metric.format(n=n), spent.format(n=n)
        metrics = results.get(policy, {}).get("metrics", {})
        if metrics.get(key) is None:
            continue
        rows.append({"label": label, "policy": policy, "key": f"{policy}_{key}",
                     "value": float(metrics[key]), "ci_low": metrics.get(f"{key}_ci_low"),
                     "ci_high": metrics.get(f"{key}_ci_high"),
                     "completions": metrics.get(f"{spent}/completions"),
                     "tokens": metrics.get(f"{spent}/tokens")})
    return rows


def _number(value: object, digits: int = 1) -> str:
    return f"{float(value):.{digits}f}" if value is not None else "-"


def _interval(row: dict[str, object]) -> str:
    low, high = row.get("ci_low"), row.get("ci_high")
    return f"{float(low):.3f}-{float(high):.3f}" if low is not None and high is not None else "-"


def summary_text(rows: list[dict[str, object]]) -> str:
    """The demo table as fixed-width console text (the same cells as `summary_markdown`)."""
    lines = [f"{'result':<46} {'accuracy':>8} {'95% CI':>12} {'completions':>11} "
             f"{'tokens':>7}   (per problem)"]
    lines += [f"{r['label']:<46} {float(r['value']):>8.3f} {_interval(r):>12} "
              f"{_number(r['completions']):>11} {_number(r['tokens'], 0):>7}" for r in rows]
    return "\n".join(lines)


def summary_markdown(rows: list[dict[str, object]]) -> str:
    lines = ["| result | accuracy | 95% CI over problems | completions per problem | tokens "
             "per problem |", "|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {float(r['value']):.3f} | {_interval(r)} | "
              f"{_number(r['completions'])} | {_number(r['tokens'], 0)} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    pipeline()
