"""Step: evaluate. Plain sampling (pass@k), best-of-N with a scorer, and VM-MCTS decoding, each
verified in the sandbox (REFERENCE.md s.7)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from restrl.artifacts import ArtifactRef, ArtifactStore
from restrl.artifacts.step import Built, RunIds, Step, params_of, run_step
from restrl.evaluation.config import EvalConfig
from restrl.problems.model import Problem
from restrl.steps.models import GeneratorSpec, model_identity, open_policy, resolve_model
from restrl.steps.problems import read_problems
from restrl.steps.sample import sample
from restrl.steps.verify import VerifyConfig, verify

Point = tuple[str, float, float]
# A method's name and metric prefix under each answer rule: best_of_8/..., best_of_8_vote/...
RULE_SUFFIX = {"best": "", "vote": "_vote"}


@dataclass
class Evaluation:
    """An evaluation's artifact and figures.

    metrics: per method (`sample/pass@1`, `majority_of_8/accuracy`, `best_of_8/accuracy`,
        `vm_mcts/accuracy`, and with the vote rule `best_of_8_vote/...`, `vm_mcts_vote/...`;
        each with its 95% interval, `.../completions` and `.../tokens` per problem) and the scorer's
        ranking on these held-out completions (`value_model/auc`, `value_model/spearman`,
        `value_model/within_problem_auc`).
    points: (method, completions per problem, accuracy) for the accuracy-vs-budget curves.
    calibration: (mean score, mean reward, rows) bins of the scorer on the same completions.
    """

    ref: ArtifactRef
    metrics: dict[str, float]
    points: list[Point] = field(default_factory=list)
    calibration: list[tuple[float, float, int]] = field(default_factory=list)


def evaluate(store: ArtifactStore, problems_ref: ArtifactRef, generator: GeneratorSpec,
             value_model: str | None, config: EvalConfig, verify_config: VerifyConfig,
             run_ids: RunIds | None = None) -> Evaluation:
    """Every configured method on the problems, each verified in the sandbox."""
    vm_identity = model_identity(store, value_model) if value_model else {}
    params = params_of(config, backend=generator.backend,
                       **model_identity(store, generator.model),
                       **{f"value_{k}": v for k, v in vm_identity.items()})

    def build() -> Built:
        import pyarrow as pa

        from restrl.artifacts.schemas import EVAL_RESULTS

        rows, figures = _run_methods(store, problems_ref, generator, value_model, config,
                                     verify_config, run_ids)
        return Built(table=pa.Table.from_pylist(rows, schema=EVAL_RESULTS), extra=figures)

    ref, extra = run_step(store, Step("eval_results", params, (problems_ref,)), build, run_ids)
    return Evaluation(ref, extra.get("metrics", {}), [tuple(p) for p in extra.get("points", [])],
                      [tuple(b) for b in extra.get("calibration", [])])


def _run_methods(store: ArtifactStore, problems_ref: ArtifactRef, generator: GeneratorSpec,
                 value_model: str | None, config: EvalConfig, verify_config: VerifyConfig,
                 run_ids: RunIds | None) -> tuple[list[dict], dict[str, Any]]:
    from restrl.evaluation import (
        sample_metrics,
        score_completions,
        selection_metrics,
    )
    from restrl.evaluation.budget import sampling_budget, spent_budget
    from restrl.evaluation.ranking import calibration_bins, ranking_metrics

    rows: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}
    points: list[Point] = []
    calibration: list[tuple[float, float, int]] = []
    problems = read_problems(store, problems_ref)
    if {"sample", "best_of_n"} & set(config.methods):
        completions = _verified_samples(store, problems_ref, generator, config, verify_config,
                                        run_ids)
        budgets = range(1, config.sampling.n + 1)  # the curves' points: k = 1..N
        # The plain majority vote (every sample one vote, no scorer): a scored vote's gain
        # over it is the scorer's.
        rows += _select(completions, [1.0] * len(completions), "vote", "majority_vote",
                        "majority_of_{n}", config, metrics, points)
        if "sample" in config.methods:
            sampled = sample_metrics(completions, ks=[k for k in config.ks
                                                      if k <= config.sampling.n])
            metrics.update({f"sample/{k}": v for k, v in sampled.items()})
            metrics.update({f"sample/{k}": v
                            for k, v in sampling_budget(completions, 1).items()})
            curve = sample_metrics(completions, ks=budgets)
            points += [("sample", k, curve[f"pass@{k}"]) for k in budgets if f"pass@{k}" in curve]
            rows += [_row(c, "sample", 1, None) for c in completions]
        if "best_of_n" in config.methods:
            scores = score_completions(_scorer(store, config, value_model), completions,
                                       problems, config.rm_type)
            rewards = [float(c["reward"]) for c in completions]
            ranking = ranking_metrics(scores, rewards, [bool(c["strict"]) for c in completions],
                                      [(c["domain"], c["problem_id"]) for c in completions])
            metrics.update({f"value_model/{k}": v for k, v in ranking.items()})
            calibration = calibration_bins(scores, rewards)
            for rule in config.answer_rules:
                rows += _select(completions, scores, rule, "best_of_n" + RULE_SUFFIX[rule],
                                "best_of_{n}" + RULE_SUFFIX[rule], config, metrics, points)
    for search in ("vm_mcts", "oracle_mcts"):
        if search in config.methods:
            # The verifier's rewards are exact: the oracle takes the highest.
            rules = ["best"] if search == "oracle_mcts" else config.answer_rules
            answers, spent = _mcts(store, problems, generator, value_model, config,
                                   verify_config, search == "oracle_mcts", rules)
            for rule, mcts_rows in answers.items():
                method = search + RULE_SUFFIX[rule]
                chosen_metrics = selection_metrics(mcts_rows)
                metrics.update({f"{method}/{k}": v for k, v in chosen_metrics.items()})
                metrics.update({f"{method}/{k}": v for k, v in spent_budget(spent).items()})
                points.append((method, metrics[f"{method}/completions"],
                               chosen_metrics.get("accuracy", 0.0)))
                rows += mcts_rows
    return rows, {"metrics": metrics, "points": points, "calibration": calibration}


def _select(completions: list[dict[str, Any]], scores: list[float], rule: str, method: str,
            prefix: str, config: EvalConfig, metrics: dict[str, float],
            points: list[Point]) -> list[dict[str, Any]]:
    """One answer per problem from its first N samples by `rule` (`choose_best_of_n`): the
    curve over N = 1..sampling.n, and for each N of `best_of_n` the metrics `prefix/...`
    ({n} filled in; with the spend) and the chosen rows (a majority vote's carry no score)."""
    from restrl.evaluation import choose_best_of_n, selection_metrics
    from restrl.evaluation.budget import sampling_budget

    rows: list[dict[str, Any]] = []
    for n in range(1, config.sampling.n + 1):
        chosen = choose_best_of_n(completions, scores, n, rule)
        chosen_metrics = selection_metrics(chosen)
        points.append((method, n, chosen_metrics.get("accuracy", 0.0)))
        if n in config.best_of_n:
            key = prefix.format(n=n)
            metrics.update({f"{key}/{k}": v for k, v in
                            {**chosen_metrics, **sampling_budget(completions, n)}.items()})
            scored = method != "majority_vote"
            rows += [_row(c, method, n, c["score"] if scored else None) for c in chosen]
    return rows


def _verified_samples(store: ArtifactStore, problems_ref: ArtifactRef,
                      generator: GeneratorSpec, config: EvalConfig, verify_config: VerifyConfig,
                      run_ids: RunIds | None) -> list[dict[str, Any]]:
    """The sampling step's completions with their verdicts' reward and strict pass."""
    completions_ref = sample(store, problems_ref, generator, config.sampling, run_ids)
    verdicts_ref = verify(store, problems_ref, completions_ref, verify_config, run_ids)
    completions = store.read_table(completions_ref).to_pylist()
    verdicts = store.read_table(verdicts_ref).to_pylist()
    for c, v in zip(completions, verdicts, strict=True):
        c.update(reward=v["reward"], strict=v["strict"])
    return completions


def _scorer(store: ArtifactStore, config: EvalConfig, value_model: str | None) -> Any:
    from restrl.value.scorer import HFRewardModelScorer, ValueModelScorer

    if config.reward_model:
        return HFRewardModelScorer(config.reward_model)
    if value_model is None:
        raise ValueError("best_of_n and vm_mcts need a value model or a reward_model")
    return ValueModelScorer(resolve_model(store, value_model)[0])


def _row(c: dict[str, Any], method: str, budget: int, score: float | None) -> dict[str, Any]:
    return {"domain": c["domain"], "problem_id": c["problem_id"], "method": method,
            "budget": budget, "sample_idx": c.get("sample_idx", 0), "program": c["program"],
            "score": score, "reward": float(c["reward"]), "strict": bool(c["strict"])}


def _mcts(store: ArtifactStore, problems: list[Problem], generator: GeneratorSpec,
          value_model: str | None, config: EvalConfig, verify_config: VerifyConfig,
          oracle: bool, rules: list[str]
          ) -> tuple[dict[str, list[dict[str, Any]]], list[tuple[int, int]]]:
    """Test-phase MCTS, valued by the value model as a PRM (VM-MCTS) or by the verifier (the
    oracle); each rule's answer from the same trees is verified. Returns the rows per rule and,
    per problem, the completions and tokens the search (and the oracle's rollouts) generated."""
    from restrl.evaluation.oracle import OracleScorer
    from restrl.search import best_completion, run_mcts, search_budget

    search = "oracle_mcts" if oracle else "vm_mcts"
    policy, tokenizer = open_policy(store, generator)
    domains = sorted({p.domain for p in problems})
    try:
        with verify_config.verifier(domains) as verifier:
            scorer = OracleScorer(problems, policy, tokenizer, verifier,
                                  rollouts=config.oracle_rollouts,
                                  temperature=config.mcts.temperature,
                                  max_tokens=config.mcts.max_tokens, seed=config.seed) \
                if oracle else _scorer(store, config, value_model)
            trees = run_mcts(problems, policy, tokenizer, scorer,
                             dataclasses.replace(config.mcts, phase="test"))
            # Per rule, in the order of problems; a search that valued nothing answers with an
            # empty program, as the original's.
            chosen = {rule: [best_completion(tree, rule) for tree in trees] for rule in rules}
            programs = {rule: [c.program if c is not None else "" for c in answers]
                        for rule, answers in chosen.items()}
            # A program two rules both chose is verified once: both report the same verdict.
            pairs = list(dict.fromkeys((i, programs[rule][i]) for rule in rules
                                       for i in range(len(problems))))
            judged = dict(zip(pairs, verifier.verify([problems[i] for i, _ in pairs],
                                                     [program for _, program in pairs]),
                              strict=True))
            verdicts = {rule: [judged[i, programs[rule][i]] for i in range(len(problems))]
                        for rule in rules}
    finally:
        policy.close()
    spent = search_budget(trees)
    if oracle:
        spent = [(c + scorer.spent[p.key][0], t + scorer.spent[p.key][1])
                 for (c, t), p in zip(spent, problems, strict=True)]
    rows = {rule: [{"domain": p.domain, "problem_id": p.problem_id,
                    "method": search + RULE_SUFFIX[rule], "budget": config.mcts_budget(),
                    "sample_idx": 0, "program": program,
                    "score": c.reward if c is not None else None, "reward": v.reward,
                    "strict": v.strict}
                   for p, c, program, v in zip(problems, chosen[rule], programs[rule],
                                               verdicts[rule], strict=True)]
            for rule in rules}
    return rows, spent
