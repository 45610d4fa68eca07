"""Step: value data. Reward rows (problem, state, reward, source) from the recorded trees, and
optionally from Stage 1's verified samples."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from restrl.artifacts import ArtifactRef, ArtifactStore
from restrl.artifacts.step import Built, RunIds, Step, params_of, run_step
from restrl.configs import config
from restrl.steps.problems import read_problems


@config
class ValueDataConfig:
    """Which rows the value model learns from."""

    stage1_samples: bool = Field(
        False, description="Also learn from Stage 1's verified samples, each a terminal row "
        "(problem, program, reward) with source 'sample' (a restrl option: the original trains "
        "on the MCTS rows only). More targets for the same compute.")


@dataclass(frozen=True)
class VerifiedSamples:
    """A sampling step's problems, completions and verdicts (e.g. Stage 1's)."""

    problems: ArtifactRef
    completions: ArtifactRef
    verdicts: ArtifactRef


def build_value_data(store: ArtifactStore, problems_ref: ArtifactRef, nodes_ref: ArtifactRef,
                     completions_ref: ArtifactRef, config: ValueDataConfig | None = None,
                     samples: VerifiedSamples | None = None, run_ids: RunIds | None = None
                     ) -> tuple[ArtifactRef, dict[str, float]]:
    """The `value_data` artifact and its statistics (REFERENCE.md s.6)."""
    import pyarrow as pa

    from restrl.search import tables_to_trees, value_data

    config = config or ValueDataConfig()
    if config.stage1_samples and samples is None:
        raise ValueError("value data with stage1_samples needs the Stage 1 samples")
    extra = (samples.problems, samples.completions, samples.verdicts) \
        if config.stage1_samples and samples is not None else ()

    def build() -> Built:
        problems = read_problems(store, problems_ref)
        trees = tables_to_trees(store.read_table(nodes_ref), store.read_table(completions_ref))
        table = value_data(trees, problems)
        if extra:
            table = pa.concat_tables([table, _sample_rows(store, samples, table.schema)])
        sources = table.column("source").to_pylist()
        rewards = table.column("reward").to_pylist()
        return Built(table=table, extra={"stats": {
            "rows": float(len(sources)),
            "rows_terminal": float(sources.count("terminal")),
            "rows_intermediate": float(sources.count("intermediate")),
            "rows_sample": float(sources.count("sample")),
            "mean_reward": sum(rewards) / len(rewards) if rewards else 0.0,
        }})

    step = Step("value_data", params_of(config) if config.stage1_samples else {},
                (problems_ref, nodes_ref, completions_ref, *extra))
    ref, stats = run_step(store, step, build, run_ids)
    return ref, stats.get("stats", {})


def _sample_rows(store: ArtifactStore, samples: VerifiedSamples, schema) -> object:  # noqa: ANN001
    import pyarrow as pa

    from restrl.problems.model import index_problems

    problems = index_problems(read_problems(store, samples.problems))
    completions = store.read_table(samples.completions).to_pylist()
    verdicts = store.read_table(samples.verdicts).to_pylist()
    rows = [{"prompt": problems[c["domain"], c["problem_id"]].prompt,
             "problem_id": c["problem_id"], "domain": c["domain"], "answer": c["program"],
             "reward": float(v["reward"]), "source": "sample"}
            for c, v in zip(completions, verdicts, strict=True)]
    return pa.Table.from_pylist(rows, schema=schema)
