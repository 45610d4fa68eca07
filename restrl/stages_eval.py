"""Evaluation step: plain sampling, best-of-N with a scorer, and VM-MCTS (DESIGN step 8)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from restrl.artifacts import ArtifactRef, ArtifactStore, artifact_key
from restrl.sampling import SamplingConfig
from restrl.search import MCTSConfig
from restrl.stages import (
    GeneratorSpec,
    RunIds,
    VerifyConfig,
    load_tokenizer,
    model_identity,
    params_of,
    read_problems_artifact,
    resolve_model,
    sample,
    verify,
)

METHODS = ("sample", "best_of_n", "vm_mcts")


@dataclass
class EvalConfig:
    """What to evaluate (the ReST-RL seed's `eval.py` flags; its defaults).

    Methods:
        methods (list[str], all three): "sample" (pass@k over `sampling.n` samples), "best_of_n"
            (keep the best-scored of N samples), "vm_mcts" (value-guided MCTS decoding).
    Sampling and best-of-N:
        sampling (SamplingConfig, n 5): samples per problem for pass@k; best-of-N reuses them
            (the original's `--num_sample 5`).
        ks (list[int], [1]): pass@k values to report (k <= sampling.n).
        best_of_n (list[int], [5]): N values for best-of-N (N <= sampling.n).
        rm_type (str, "orm"): score whole answers ("orm") or every line prefix, keeping the
            worst ("prm").
        reward_model (str | None, None): a Hugging Face sequence-classification reward model
            to score with instead of restrl's value model.
    VM-MCTS:
        mcts (MCTSConfig, the original's `--method MCTS` flags: 15 iterations, 5 samples, 5
            decisions, c 0.1, eps 0.1, temperature 0.7, 1024 tokens): the test-phase search
            (its `phase` is always "test"); its budget is at most iterations x num_sample
            completions per problem.
    seed (int, 0).
    """

    methods: list[str] = field(default_factory=lambda: list(METHODS))
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(n=5))
    ks: list[int] = field(default_factory=lambda: [1])
    best_of_n: list[int] = field(default_factory=lambda: [5])
    rm_type: str = "orm"
    reward_model: str | None = None
    mcts: MCTSConfig = field(default_factory=lambda: MCTSConfig.test_phase(
        iteration_limit=15, num_sample=5, num_decision=5))
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown evaluation methods {sorted(unknown)}; expected {METHODS}")

    def mcts_budget(self) -> int:
        """Most completions VM-MCTS generates per problem (iterations x samples)."""
        return int(self.mcts.iteration_limit or 0) * self.mcts.num_sample


def _scorer(store: ArtifactStore, config: EvalConfig, value_model: str | None) -> Any:
    from restrl.training.value import HFRewardModelScorer, ValueModelScorer

    if config.reward_model:
        return HFRewardModelScorer(config.reward_model)
    if value_model is None:
        raise ValueError("best_of_n and vm_mcts need a value model or a reward_model")
    return ValueModelScorer(resolve_model(store, value_model)[0])


def evaluate(store: ArtifactStore, problems_ref: ArtifactRef, generator_spec: GeneratorSpec,
             value_model: str | None, config: EvalConfig, verify_config: VerifyConfig,
             run_ids: RunIds | None = None) -> tuple[ArtifactRef, dict[str, float], list]:
    """Every configured method on the problems; returns eval_results, metrics and plot points.

    Plot points are (method, completions generated per problem, strict accuracy).
    """
    import pyarrow as pa

    from restrl.evaluation import (
        choose_best_of_n,
        sample_metrics,
        score_completions,
        selection_metrics,
    )

    identity = model_identity(store, generator_spec.model)
    vm_identity = model_identity(store, value_model) if value_model else {}
    params = params_of(config, backend=generator_spec.backend, **identity,
                       **{f"value_{k}": v for k, v in vm_identity.items()})
    key = artifact_key("eval_results", params, [problems_ref])
    if (found := store.find("eval_results", key)) is not None:
        extra = store.manifest(found.uri).extra
        return found, extra.get("metrics", {}), [tuple(p) for p in extra.get("points", [])]
    rows: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}
    points: list[tuple[str, float, float]] = []
    needs_samples = {"sample", "best_of_n"} & set(config.methods)
    if needs_samples:
        completions_ref = sample(store, problems_ref, generator_spec, config.sampling, run_ids)
        verdicts_ref = verify(store, problems_ref, completions_ref, verify_config, run_ids)
        problems = read_problems_artifact(store, problems_ref)
        completions = store.read_table(completions_ref).to_pylist()
        verdicts = store.read_table(verdicts_ref).to_pylist()
        for c, v in zip(completions, verdicts, strict=True):
            c.update(reward=v["reward"], strict=v["strict"])
        if "sample" in config.methods:
            sampled = sample_metrics(completions, ks=[k for k in config.ks
                                                      if k <= config.sampling.n])
            metrics.update({f"sample/{k}": v for k, v in sampled.items()})
            points.append(("sample", 1, sampled.get("pass@1", sampled["strict_accuracy"])))
            rows += [_row(c, "sample", 1, None) for c in completions]
        if "best_of_n" in config.methods:
            scorer = _scorer(store, config, value_model)
            scores = score_completions(scorer, completions, problems, config.rm_type)
            for n in config.best_of_n:
                if n > config.sampling.n:
                    continue
                chosen = choose_best_of_n(completions, scores, n)
                chosen_metrics = selection_metrics(chosen)
                metrics.update({f"best_of_{n}/{k}": v for k, v in chosen_metrics.items()})
                points.append(("best_of_n", n, chosen_metrics.get("accuracy", 0.0)))
                rows += [_row(c, "best_of_n", n, c["score"]) for c in chosen]
    if "vm_mcts" in config.methods:
        mcts_rows = _vm_mcts(store, problems_ref, generator_spec, value_model, config,
                             verify_config)
        chosen_metrics = selection_metrics(mcts_rows)
        metrics.update({f"vm_mcts/{k}": v for k, v in chosen_metrics.items()})
        points.append(("vm_mcts", config.mcts_budget(), chosen_metrics.get("accuracy", 0.0)))
        rows += mcts_rows
    from restrl.schemas import EVAL_RESULTS

    table = pa.Table.from_pylist(rows, schema=EVAL_RESULTS)
    ref = store.put_table(table, "eval_results", params, [problems_ref], key=key,
                          run_ids=(run_ids or RunIds()).as_dict(),
                          extra={"metrics": metrics, "points": points})
    return ref, metrics, points


def _row(c: dict[str, Any], method: str, budget: int, score: float | None) -> dict[str, Any]:
    return {"domain": c["domain"], "problem_id": c["problem_id"], "method": method,
            "budget": budget,
            "sample_idx": c.get("sample_idx", 0), "program": c["program"], "score": score,
            "reward": float(c["reward"]), "strict": bool(c["strict"])}


def _vm_mcts(store: ArtifactStore, problems_ref: ArtifactRef, generator_spec: GeneratorSpec,
             value_model: str | None, config: EvalConfig,
             verify_config: VerifyConfig) -> list[dict[str, Any]]:
    """Test-phase MCTS with the value model as PRM; the best-scored completion is verified."""
    from restrl.generation import make_generator
    from restrl.search import best_completion, run_mcts

    problems = read_problems_artifact(store, problems_ref)
    scorer = _scorer(store, config, value_model)
    model_path, _ = resolve_model(store, generator_spec.model)
    tokenizer = load_tokenizer(model_path)
    mcts_config = dataclasses.replace(config.mcts, phase="test")
    generator = make_generator(generator_spec.backend, model_path, **generator_spec.options)
    try:
        trees = run_mcts(problems, generator, tokenizer, scorer, mcts_config)
    finally:
        generator.close()
    chosen = [best_completion(tree) for tree in trees]  # trees come in the order of problems
    # A search that valued nothing answers with an empty program, as the original's.
    programs = [c.program if c is not None else "" for c in chosen]
    domains = sorted({p.domain for p in problems})
    with verify_config.verifier(domains) as verifier:
        verdicts = verifier.verify(problems, programs)
    return [{"domain": p.domain, "problem_id": p.problem_id, "method": "vm_mcts",
             "budget": config.mcts_budget(), "sample_idx": 0, "program": program,
             "score": c.reward if c is not None else None, "reward": v.reward,
             "strict": v.strict}
            for p, c, program, v in zip(problems, chosen, programs, verdicts, strict=True)]
