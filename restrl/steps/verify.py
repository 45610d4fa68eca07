"""Step: verify. One verdict per completion, judged in the sandbox, committed shard by shard."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import Field

from restrl.artifacts import ArtifactRef, ArtifactStore
from restrl.artifacts.step import (
    RunIds,
    ShardPlan,
    commit_shards,
    params_of,
    plan_shards,
    put_shard,
    shard_count,
)
from restrl.configs import config
from restrl.problems.model import index_problems
from restrl.sandbox import CheckOptions, Limits
from restrl.steps.problems import read_problems

OnShard = Callable[[int, int], None]


@config
class VerifyConfig:
    """How programs are judged; the defaults give the original ReST-RL rewards."""

    limits: Limits = Field(default_factory=Limits, description="Time and memory per program.")
    checks: CheckOptions = Field(default_factory=CheckOptions,
                                 description="How outcomes are compared.")
    isolation: str = Field("auto", description="auto (bubblewrap; refuses dataset domains "
                           "without it), bwrap, or rlimits (no filesystem isolation; an "
                           "unprivileged uid).")
    # --- throughput (never changes a verdict) ---
    workers: int | None = Field(None, description="Parallel sandboxes (None: the core count).")
    shard_rows: int = Field(256, description="Verdicts per committed shard.")

    def verifier(self, domains: Sequence[str], pool: Any = None) -> Any:
        """A warm `Verifier` with these settings for programs of `domains` (close it); `pool`:
        one already started with this config's `workers` and `isolation` (`start_pool`)."""
        from restrl.sandbox import Verifier

        return Verifier(self.workers, self.limits, self.isolation, domains, self.checks, pool)


def plan_verify(store: ArtifactStore, problems_ref: ArtifactRef, completions_ref: ArtifactRef,
                config: VerifyConfig) -> ShardPlan:
    params = params_of(config)
    for throughput in ("workers", "isolation"):  # they do not change verdicts
        params.pop(f"VerifyConfig.{throughput}")
    shards = shard_count(completions_ref.rows, config.shard_rows)
    return plan_shards(store, ["verdicts"], params, [problems_ref, completions_ref], shards)


def verify_shards(store: ArtifactStore, plan: ShardPlan, problems_ref: ArtifactRef,
                  completions_ref: ArtifactRef, config: VerifyConfig, indices: Sequence[int],
                  on_shard: OnShard | None = None) -> None:
    """Verify and commit the given shards with one warm sandbox pool."""
    import pyarrow as pa

    from restrl.artifacts.schemas import VERDICTS
    from restrl.sampling import shards

    if not indices:
        return
    problems = index_problems(read_problems(store, problems_ref))
    completions = store.read_table(completions_ref).to_pylist()
    pieces = shards(list(enumerate(completions)), config.shard_rows)
    with config.verifier(sorted({domain for domain, _ in problems})) as verifier:
        for index in indices:
            piece = pieces[index]
            verdicts = verifier.verify([problems[c["domain"], c["problem_id"]] for _, c in piece],
                                       [c["program"] for _, c in piece])
            rows = [{"row": row, "domain": c["domain"], "problem_id": c["problem_id"],
                     "sample_idx": c["sample_idx"], **v.to_row()}
                    for (row, c), v in zip(piece, verdicts, strict=True)]
            put_shard(store, plan, index, [pa.Table.from_pylist(rows, schema=VERDICTS)])
            if on_shard is not None:
                on_shard(index, plan.shards)


def verify(store: ArtifactStore, problems_ref: ArtifactRef, completions_ref: ArtifactRef,
           config: VerifyConfig, run_ids: RunIds | None = None,
           on_shard: OnShard | None = None) -> ArtifactRef:
    """One verdict per completion (same order), committed shard by shard (resumable)."""
    plan = plan_verify(store, problems_ref, completions_ref, config)
    verify_shards(store, plan, problems_ref, completions_ref, config, plan.pending, on_shard)
    return commit_shards(store, plan, run_ids)[0]


def summarize_verdicts(store: ArtifactStore, verdicts_ref: ArtifactRef) -> dict[str, float]:
    """Pass rates of a verdicts table (mean reward, strict pass rate over samples, statuses)."""
    rows = store.read_table(verdicts_ref).select(["reward", "strict", "status"]).to_pylist()
    n = len(rows) or 1
    metrics: dict[str, float] = {
        "mean_reward": sum(r["reward"] for r in rows) / n,
        "strict_accuracy": sum(r["strict"] for r in rows) / n,
        "programs": float(len(rows)),
    }
    for status in sorted({r["status"] for r in rows}):
        metrics[f"status_{status}"] = sum(r["status"] == status for r in rows) / n
    return metrics
