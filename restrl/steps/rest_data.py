"""Step: ReST data. Training rows (grpo / dpo / sft) from verified samples (REFERENCE.md s.3)."""

from __future__ import annotations

from restrl.artifacts import ArtifactRef, ArtifactStore
from restrl.artifacts.step import Built, RunIds, Step, params_of, run_step
from restrl.rest import RestDataConfig
from restrl.steps.models import TINY_MODEL, load_tokenizer, resolve_model
from restrl.steps.problems import read_problems


def build_rest_data(store: ArtifactStore, problems_ref: ArtifactRef,
                    completions_ref: ArtifactRef, verdicts_ref: ArtifactRef,
                    config: RestDataConfig, model: str = TINY_MODEL,
                    run_ids: RunIds | None = None) -> tuple[ArtifactRef, dict[str, float]]:
    """The `<mode>_data` artifact and its statistics (rows kept, filtered, prefixes)."""
    from restrl.rest import build_rest_data as build_rows
    from restrl.rest import join_samples

    def build() -> Built:
        problems = read_problems(store, problems_ref)
        samples = join_samples(store.read_table(completions_ref), store.read_table(verdicts_ref))
        tokenizer = load_tokenizer(resolve_model(store, model)[0])
        table, stats = build_rows(problems, samples, config, tokenizer)
        return Built(table=table, extra={"stats": stats.as_metrics()})

    step = Step(f"{config.mode}_data", params_of(config),
                (problems_ref, completions_ref, verdicts_ref))
    ref, extra = run_step(store, step, build, run_ids)
    return ref, extra.get("stats", {})
