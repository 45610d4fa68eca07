"""Step: value data. Reward rows (problem, state, reward, source) from the recorded trees."""

from __future__ import annotations

from restrl.artifacts import ArtifactRef, ArtifactStore
from restrl.artifacts.step import Built, RunIds, Step, run_step
from restrl.steps.problems import read_problems


def build_value_data(store: ArtifactStore, problems_ref: ArtifactRef, nodes_ref: ArtifactRef,
                     completions_ref: ArtifactRef, run_ids: RunIds | None = None
                     ) -> tuple[ArtifactRef, dict[str, float]]:
    """The `value_data` artifact and its statistics (REFERENCE.md s.6)."""
    from restrl.search import tables_to_trees, value_data

    def build() -> Built:
        problems = read_problems(store, problems_ref)
        trees = tables_to_trees(store.read_table(nodes_ref), store.read_table(completions_ref))
        table = value_data(trees, problems)
        sources = table.column("source").to_pylist()
        rewards = table.column("reward").to_pylist()
        return Built(table=table, extra={"stats": {
            "rows": float(len(sources)),
            "rows_terminal": float(sources.count("terminal")),
            "rows_intermediate": float(sources.count("intermediate")),
            "mean_reward": sum(rewards) / len(rewards) if rewards else 0.0,
        }})

    step = Step("value_data", {}, (problems_ref, nodes_ref, completions_ref))
    ref, extra = run_step(store, step, build, run_ids)
    return ref, extra.get("stats", {})
