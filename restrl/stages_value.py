"""Stage 2 steps: MCTS value targets -> reward data -> value model (DESIGN steps 5-7).

Same contract as `restrl.stages`: artifact refs in, an artifact ref out, content-derived keys,
and shards committed as the search goes so a crash loses at most one shard of trees.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from restrl.artifacts import ArtifactRef, ArtifactStore, artifact_key
from restrl.sampling import shards
from restrl.stages import (
    GeneratorSpec,
    RunIds,
    VerifyConfig,
    is_main_process,
    load_tokenizer,
    model_identity,
    params_of,
    read_problems_artifact,
    resolve_model,
)


def collect_mcts(store: ArtifactStore, problems_ref: ArtifactRef, generator_spec: GeneratorSpec,
                 config: Any, verify_config: VerifyConfig, shard_problems: int = 8,
                 run_ids: RunIds | None = None,
                 on_shard: Callable[[int, int], None] | None = None
                 ) -> tuple[ArtifactRef, ArtifactRef]:
    """Train-phase MCTS on every problem (verified rollouts): `mcts_nodes`, `mcts_completions`."""
    import pyarrow as pa

    from restrl.search import run_mcts, trees_to_tables

    params = params_of(config, shard_problems=shard_problems, backend=generator_spec.backend,
                       **model_identity(store, generator_spec.model))
    parents = [problems_ref]
    nodes_key = artifact_key("mcts_nodes", params, parents)
    completions_key = artifact_key("mcts_completions", params, parents)
    nodes_found = store.find("mcts_nodes", nodes_key)
    completions_found = store.find("mcts_completions", completions_key)
    if nodes_found is not None and completions_found is not None:
        return nodes_found, completions_found
    problems = read_problems_artifact(store, problems_ref)
    pieces = shards(problems, shard_problems)
    done = (set(store.committed_shards("mcts_nodes", nodes_key))
            & set(store.committed_shards("mcts_completions", completions_key)))
    if len(done) < len(pieces):
        from restrl.generation import make_generator

        model_path, _ = resolve_model(store, generator_spec.model)
        tokenizer = load_tokenizer(model_path)
        generator = make_generator(generator_spec.backend, model_path, **generator_spec.options)
        domains = sorted({p.domain for p in problems})
        try:
            with verify_config.verifier(domains) as verifier:
                for index, piece in enumerate(pieces):
                    if index in done:
                        continue
                    trees = run_mcts(list(piece), generator, tokenizer, verifier, config)
                    nodes, completions = trees_to_tables(trees)
                    # Completions first: a shard counts as done once both tables are there.
                    store.put_shard(completions, "mcts_completions", completions_key, index)
                    store.put_shard(nodes, "mcts_nodes", nodes_key, index)
                    if on_shard is not None:
                        on_shard(index, len(pieces))
        finally:
            generator.close()
    run = (run_ids or RunIds()).as_dict()
    refs = []
    for kind, key in (("mcts_nodes", nodes_key), ("mcts_completions", completions_key)):
        table = pa.concat_tables([store.read_shard(kind, key, i) for i in range(len(pieces))])
        refs.append(store.put_table(table, kind, params, parents, key=key, run_ids=run))
    return refs[0], refs[1]


def build_value_data(store: ArtifactStore, problems_ref: ArtifactRef, nodes_ref: ArtifactRef,
                     completions_ref: ArtifactRef,
                     run_ids: RunIds | None = None) -> tuple[ArtifactRef, dict[str, float]]:
    """Reward rows (problem text, full state, reward, source) from the recorded trees
    (DESIGN step 6)."""
    from restrl.search import tables_to_trees, value_data

    parents = [problems_ref, nodes_ref, completions_ref]
    params: dict[str, Any] = {}
    key = artifact_key("value_data", params, parents)
    if (found := store.find("value_data", key)) is not None:
        return found, store.manifest(found.uri).extra.get("stats", {})
    problems = read_problems_artifact(store, problems_ref)
    trees = tables_to_trees(store.read_table(nodes_ref), store.read_table(completions_ref))
    table = value_data(trees, problems)
    sources = table.column("source").to_pylist()
    rewards = table.column("reward").to_pylist()
    stats = {
        "rows": float(len(sources)),
        "rows_terminal": float(sources.count("terminal")),
        "rows_intermediate": float(sources.count("intermediate")),
        "mean_reward": sum(rewards) / len(rewards) if rewards else 0.0,
    }
    ref = store.put_table(table, "value_data", params, parents, key=key,
                          run_ids=(run_ids or RunIds()).as_dict(), extra={"stats": stats})
    return ref, stats


def train_value(store: ArtifactStore, base_model: str, data_ref: ArtifactRef, config: Any,
                work_dir: str | Path, run_ids: RunIds | None = None,
                on_log: Callable[[int, dict[str, float]], None] | None = None
                ) -> tuple[ArtifactRef, dict[str, float]]:
    """Train the value model on reward rows; the result is a `value_model` artifact."""
    from restrl.training.value import train_value_model

    model_path, model_ref = resolve_model(store, base_model)
    params = params_of(config, **model_identity(store, base_model))
    parents = [data_ref] + ([model_ref] if model_ref else [])
    key = artifact_key("value_model", params, parents)
    if (found := store.find("value_model", key)) is not None:
        return found, store.manifest(found.uri).extra.get("metrics", {})
    rows = store.read_table(data_ref)
    result = train_value_model(model_path, rows, config, Path(work_dir) / key, on_log=on_log)
    metrics = {k: float(v) for k, v in result.metrics.items()}
    if not is_main_process():  # under `accelerate launch`/`deepspeed`, rank 0 commits
        return ArtifactRef(store.uri("value_model", key), "", "value_model"), metrics
    ref = store.put_model(result.model_dir, "value_model", params, parents, key=key,
                          run_ids=(run_ids or RunIds()).as_dict(),
                          extra={"metrics": metrics, "base_model": base_model,
                                 "n_train": result.n_train, "n_eval": result.n_eval})
    return ref, metrics
