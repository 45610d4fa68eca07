"""The one way a pipeline step is cached and resumed.

A step names what it builds (`kind`), its settings (`params`) and its inputs (`parents`); its
artifact key is derived from them (inputs' sha256 + settings + code version). `run_step` returns
the committed artifact when the key exists, else builds and commits it. Long steps are sharded:
`plan_shards` lists the shards still to do, any process that reaches the store commits them
(threads here, Dask workers elsewhere), and `commit_shards` joins them in order. A crash loses
at most the shard in flight; the rerun redoes nothing that was committed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restrl.artifacts.store import ArtifactRef, ArtifactStore, artifact_key

log = logging.getLogger("restrl.steps")


@dataclass
class RunIds:
    """Runs an artifact is recorded against (written into its manifest)."""

    mlflow_run_id: str | None = None
    prefect_flow_run_id: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Step:
    """One cached step: what it builds, with which settings, from which artifacts."""

    kind: str
    params: dict[str, Any]
    parents: tuple[ArtifactRef, ...] = ()

    @property
    def key(self) -> str:
        return artifact_key(self.kind, self.params, self.parents)


@dataclass
class Built:
    """What a step's build returns: a table or a model directory, and manifest extras."""

    table: Any = None
    model_dir: str | Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def params_of(*configs: Any, **extra: Any) -> dict[str, Any]:
    """Settings for an artifact key and its manifest: config dataclasses flattened by name."""
    params: dict[str, Any] = {}
    for config in configs:
        prefix = type(config).__name__
        for key, value in dataclasses.asdict(config).items():
            params[f"{prefix}.{key}"] = value
    params.update(extra)
    return params


def is_main_process() -> bool:
    """False on the non-zero ranks of a distributed (`accelerate launch`) run."""
    return int(os.environ.get("RANK", "0")) == 0


def run_step(store: ArtifactStore, step: Step, build: Callable[[], Built],
             run_ids: RunIds | None = None) -> tuple[ArtifactRef, dict[str, Any]]:
    """The step's artifact and its manifest extras: reused when committed, else built.

    Under `accelerate launch` every rank builds (training is collective) and rank 0 commits;
    the other ranks get the reference rank 0 writes.
    """
    key = step.key
    if (found := store.find(step.kind, key)) is not None:
        log.info("reused %s %s", step.kind, found.uri)
        return found, store.manifest(found.uri).extra
    built = build()
    if not is_main_process():
        return ArtifactRef(store.uri(step.kind, key), "", step.kind), built.extra
    ids = (run_ids or RunIds()).as_dict()
    if built.model_dir is not None:
        ref = store.put_model(built.model_dir, step.kind, step.params, list(step.parents),
                              key=key, run_ids=ids, extra=built.extra)
    else:
        ref = store.put_table(built.table, step.kind, step.params, list(step.parents), key=key,
                              run_ids=ids, extra=built.extra)
    return ref, built.extra


# ----------------------------------------------------------------------------- shards


@dataclass(frozen=True)
class ShardPlan:
    """A sharded step: the artifacts it commits (one per kind, same settings and inputs) and
    the shards not yet committed in all of them."""

    kinds: tuple[str, ...]
    params: dict[str, Any]
    parents: tuple[ArtifactRef, ...]
    shards: int
    pending: tuple[int, ...]
    found: tuple[ArtifactRef, ...] = ()

    def key(self, kind: str) -> str:
        return artifact_key(kind, self.params, self.parents)

    @property
    def kind(self) -> str:
        return self.kinds[0]


def plan_shards(store: ArtifactStore, kinds: Sequence[str], params: dict[str, Any],
                parents: Sequence[ArtifactRef], shard_count: int) -> ShardPlan:
    """Which of `shard_count` shards are still to be committed (none when all artifacts exist)."""
    keys = {kind: artifact_key(kind, params, parents) for kind in kinds}
    found = tuple(ref for kind in kinds if (ref := store.find(kind, keys[kind])) is not None)
    if len(found) == len(kinds):
        log.info("reused %s", ", ".join(ref.uri for ref in found))
        return ShardPlan(tuple(kinds), params, tuple(parents), shard_count, (), found)
    done = set(range(shard_count))
    for kind in kinds:
        done &= set(store.committed_shards(kind, keys[kind]))
    pending = tuple(i for i in range(shard_count) if i not in done)
    if done:
        log.info("%s: resuming, %d of %d shards already committed", kinds[0], len(done),
                 shard_count)
    return ShardPlan(tuple(kinds), params, tuple(parents), shard_count, pending)


def put_shard(store: ArtifactStore, plan: ShardPlan, index: int, tables: Sequence[Any]) -> None:
    """Commit shard `index` of every artifact of the plan (in the plan's order of kinds).

    The first kind is written last: a shard counts as done once all its tables are there.
    """
    for kind, table in reversed(list(zip(plan.kinds, tables, strict=True))):
        store.put_shard(table, kind, plan.key(kind), index)


def commit_shards(store: ArtifactStore, plan: ShardPlan,
                  run_ids: RunIds | None = None) -> tuple[ArtifactRef, ...]:
    """The plan's artifacts, each its committed shards concatenated in order."""
    import pyarrow as pa

    if plan.found:
        return plan.found
    refs = []
    for kind in plan.kinds:
        key = plan.key(kind)
        missing = set(range(plan.shards)) - set(store.committed_shards(kind, key))
        if missing:
            raise RuntimeError(f"{kind}: shards {sorted(missing)} are not committed yet")
        table = pa.concat_tables([store.read_shard(kind, key, i) for i in range(plan.shards)])
        refs.append(store.put_table(table, kind, plan.params, list(plan.parents), key=key,
                                    run_ids=(run_ids or RunIds()).as_dict()))
    return tuple(refs)


def shard_count(rows: int | None, per_shard: int) -> int:
    """Shards of at most `per_shard` rows (at least one row per shard)."""
    return -(-int(rows or 0) // max(1, per_shard))
