"""Each pipeline step as a function from artifact references to an artifact reference.

Every step derives its artifact key from its inputs (parents' sha256 + parameters + code
version) and returns the committed artifact when it already exists, so a re-run with unchanged
inputs does no work. Long steps commit shards as they go and resume from them after a crash.
Prefect tasks (`tasks/`) are thin wrappers over these functions; nothing here imports Prefect.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restrl.artifacts import ArtifactRef, ArtifactStore, artifact_key
from restrl.problems.model import Problem, index_problems

log = logging.getLogger("restrl.stages")

TINY_MODEL = "tiny"


@dataclass
class ProblemSource:
    """Where problems come from.

    domain (str, "toy"): apps, bigcodebench, ds1000, humaneval or toy.
    path (str | None): the dataset file (toy: generated, no file; humaneval: package default).
    split (str, "train"): toy split ("train" or "test"); ignored for files.
    n (int | None, None): first n problems (toy: n generated problems); None = all, as the
        original processes every problem of its files.
    seed (int, 0): toy generator seed.
    """

    domain: str = "toy"
    path: str | None = None
    split: str = "train"
    n: int | None = None
    seed: int = 0


@dataclass
class RunIds:
    """Runs an artifact is recorded against (written into manifests)."""

    mlflow_run_id: str | None = None
    prefect_flow_run_id: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)


@dataclass
class VerifyConfig:
    """Sandbox settings for verification; the defaults give the original ReST-RL rewards.

    timeout (float, 4.0): seconds per test where tests run one at a time (each APPS test, a
        HumanEval/toy check).
    job_timeout (float, 60.0): seconds for a whole BigCodeBench suite or DS1000 test program,
        and for all of an APPS problem's tests together.
    memory_mb (int, 2048): address space per APPS/HumanEval/toy program.
    library_memory_mb (int, 16384): address space per BigCodeBench/DS1000 program (their
        libraries map about 3 GiB; the original caps at 16 GiB).
    apps_compare (str, "reference"): APPS output comparison: "reference" = the original
        harness's rules, "strict" = exact or token-wise with float tolerance.
    workers (int | None): parallel sandboxes (None = cores).
    shard_rows (int, 256): verdicts per committed shard.
    """

    timeout: float = 4.0
    job_timeout: float = 60.0
    memory_mb: int = 2048
    library_memory_mb: int = 16384
    apps_compare: str = "reference"
    workers: int | None = None
    shard_rows: int = 256

    def limits(self) -> Any:
        from restrl.sandbox import Limits

        return Limits(timeout=self.timeout, job_timeout=self.job_timeout,
                      memory_bytes=self.memory_mb << 20,
                      library_memory_bytes=self.library_memory_mb << 20)

    def verifier(self, domains: Sequence[str]) -> Any:
        """A warm `Verifier` with these settings for programs of `domains` (close it)."""
        from restrl.sandbox import CheckOptions, Verifier

        return Verifier(self.workers, self.limits(), domains=domains,
                        options=CheckOptions(apps_compare=self.apps_compare))


@dataclass
class GeneratorSpec:
    """The policy and how to run it.

    model (str, "tiny"): "tiny" (the embedded model), a local path, a hub id, or a model
        artifact URI from a previous run.
    backend (str, "hf"): hf, vllm or openai.
    options (dict): backend options (hf: batch_size, device; vllm: tensor_parallel_size,
        gpu_memory_utilization; openai: base_url, max_concurrency, ...).
    """

    model: str = TINY_MODEL
    backend: str = "hf"
    options: dict[str, Any] = field(default_factory=dict)


def params_of(*configs: Any, **extra: Any) -> dict[str, Any]:
    """Parameters for an artifact key and its manifest: dataclasses flattened by name."""
    params: dict[str, Any] = {}
    for config in configs:
        prefix = type(config).__name__
        for key, value in dataclasses.asdict(config).items():
            params[f"{prefix}.{key}"] = value
    params.update(extra)
    return params


# ----------------------------------------------------------------------------- models


def resolve_model(store: ArtifactStore, model: str) -> tuple[str, ArtifactRef | None]:
    """(local path or hub id, artifact ref when the model is a stored artifact)."""
    if model == TINY_MODEL:
        from restrl.toy.tiny_model import tiny_model_path

        return str(tiny_model_path()), None
    if "://" in model:
        model_store = store_for_model(store, model)
        return str(model_store.model_path(model)), model_store.manifest(model).ref()
    return model, None


def model_identity(store: ArtifactStore, model: str) -> dict[str, Any]:
    """What identifies a model in cache keys: its artifact sha256, or its directory's hash."""
    if "://" in model:
        return {"model_sha256": store_for_model(store, model).manifest(model).sha256}
    path = resolve_model(store, model)[0] if model == TINY_MODEL else model
    if Path(path).is_dir():
        from restrl.artifacts.store import directory_sha256

        return {"model_sha256": directory_sha256(Path(path))}
    return {"model": model}


def store_for_model(store: ArtifactStore, model: str) -> ArtifactStore:
    """`store` when the model artifact lives in it, else a store at the model's own root."""
    from restrl.artifacts import store_for

    return store if model.startswith(store.root + "/") else store_for(model)


def is_main_process() -> bool:
    """False on the non-zero ranks of a distributed (`accelerate launch`) run."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def load_tokenizer(model_path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path)
    except (OSError, ValueError) as exc:  # an API-only model: plain prompt format
        log.warning("no tokenizer for %s (%s): prompts use the plain format", model_path, exc)
        return None


# ----------------------------------------------------------------------------- steps


def load_problems(store: ArtifactStore, source: ProblemSource,
                  run_ids: RunIds | None = None) -> tuple[ArtifactRef, list[str]]:
    """Problems as an artifact; returns it with the rows the reader set aside."""
    from restrl.problems import problems_to_table, read_problems

    if source.domain == "toy":
        from restrl.toy import families_fingerprint, toy_problems

        params = params_of(source, toy_families=families_fingerprint())
        key = artifact_key("problems", params, [])
        if (found := store.find("problems", key)) is not None:
            return found, []
        problems, rejected = toy_problems(source.split, source.n, source.seed), []
    else:
        params = params_of(source)
        if source.path is not None:
            import hashlib

            params["file_sha256"] = hashlib.sha256(Path(source.path).read_bytes()).hexdigest()
        key = artifact_key("problems", params, [])
        if (found := store.find("problems", key)) is not None:
            return found, []
        result = read_problems(source.path, source.domain)
        problems = result.problems[: source.n] if source.n is not None else result.problems
        rejected = [str(r) for r in result.rejected]
    ref = store.put_table(problems_to_table(problems), "problems", params, key=key,
                          run_ids=(run_ids or RunIds()).as_dict(),
                          extra={"rejected": rejected})
    return ref, rejected


def merge_problems(store: ArtifactStore, refs: Sequence[ArtifactRef],
                   run_ids: RunIds | None = None) -> ArtifactRef:
    """One problems artifact from several problem sets, e.g. the seed's `--domain code` (APPS +
    BigCodeBench + DS1000 trained as one GRPO data set); each set stays a parent in the lineage.

    One set is returned as it is. A (domain, problem_id) found in two sets is an error: its
    completions could not be told apart.
    """
    from restrl.problems import problems_to_table

    if not refs:
        raise ValueError("merge_problems needs at least one problems artifact")
    if len(refs) == 1:
        return refs[0]
    params = {"merged_sets": len(refs)}
    key = artifact_key("problems", params, refs)
    if (found := store.find("problems", key)) is not None:
        return found
    problems = [p for ref in refs for p in read_problems_artifact(store, ref)]
    index_problems(problems)
    return store.put_table(problems_to_table(problems), "problems", params, list(refs), key=key,
                           run_ids=(run_ids or RunIds()).as_dict())


def read_problems_artifact(store: ArtifactStore, ref: ArtifactRef) -> list[Problem]:
    from restrl.problems import table_to_problems

    return table_to_problems(store.read_table(ref))


@dataclass(frozen=True)
class ShardPlan:
    """A sharded step: where its artifact goes and which shards are still to be committed.

    Shards can run anywhere that reaches the store (threads, Dask workers); `commit_shards`
    joins them in order once all are committed.
    """

    kind: str
    key: str
    params: dict[str, Any]
    parents: tuple[ArtifactRef, ...]
    shards: int
    pending: tuple[int, ...]
    found: ArtifactRef | None = None


def _plan(store: ArtifactStore, kind: str, params: dict[str, Any],
          parents: Sequence[ArtifactRef], shard_count: int) -> ShardPlan:
    key = artifact_key(kind, params, parents)
    found = store.find(kind, key)
    done = set(store.committed_shards(kind, key)) if found is None else set(range(shard_count))
    pending = tuple(i for i in range(shard_count) if i not in done)
    return ShardPlan(kind, key, params, tuple(parents), shard_count, pending, found)


def commit_shards(store: ArtifactStore, plan: ShardPlan,
                  run_ids: RunIds | None = None) -> ArtifactRef:
    """The step's artifact: its committed shards concatenated in order."""
    import pyarrow as pa

    if plan.found is not None:
        return plan.found
    missing = set(range(plan.shards)) - set(store.committed_shards(plan.kind, plan.key))
    if missing:
        raise RuntimeError(f"{plan.kind}: shards {sorted(missing)} are not committed yet")
    table = pa.concat_tables([store.read_shard(plan.kind, plan.key, i)
                              for i in range(plan.shards)])
    return store.put_table(table, plan.kind, plan.params, list(plan.parents), key=plan.key,
                           run_ids=(run_ids or RunIds()).as_dict())


def plan_sample(store: ArtifactStore, problems_ref: ArtifactRef, generator_spec: GeneratorSpec,
                config: Any) -> ShardPlan:
    params = params_of(config, backend=generator_spec.backend,
                       **model_identity(store, generator_spec.model))
    shard_count = -(-int(problems_ref.rows or 0) // max(1, config.shard_problems))
    return _plan(store, "completions", params, [problems_ref], shard_count)


def sample_shards(store: ArtifactStore, plan: ShardPlan, problems_ref: ArtifactRef,
                  generator_spec: GeneratorSpec, config: Any, indices: Sequence[int],
                  on_shard: Callable[[int, int], None] | None = None) -> None:
    """Sample and commit the given shards with one loaded generator."""
    import pyarrow as pa

    from restrl.generation import make_generator
    from restrl.sampling import sample_problems, shards
    from restrl.schemas import COMPLETIONS

    if not indices:
        return
    pieces = shards(read_problems_artifact(store, problems_ref), config.shard_problems)
    model_path, _ = resolve_model(store, generator_spec.model)
    tokenizer = load_tokenizer(model_path)
    generator = make_generator(generator_spec.backend, model_path, **generator_spec.options)
    try:
        for index in indices:
            # Seeded by shard index, so a resumed or distributed run draws the same samples.
            rows = sample_problems(pieces[index], generator, tokenizer, config,
                                   seed=config.seed + 100_003 * index)
            store.put_shard(pa.Table.from_pylist(rows, schema=COMPLETIONS), plan.kind, plan.key,
                            index)
            if on_shard is not None:
                on_shard(index, plan.shards)
    finally:
        generator.close()


def sample(store: ArtifactStore, problems_ref: ArtifactRef, generator_spec: GeneratorSpec,
           config: Any, run_ids: RunIds | None = None,
           on_shard: Callable[[int, int], None] | None = None) -> ArtifactRef:
    """Completions for every problem, n each, committed shard by shard (resumable)."""
    plan = plan_sample(store, problems_ref, generator_spec, config)
    sample_shards(store, plan, problems_ref, generator_spec, config, plan.pending, on_shard)
    return commit_shards(store, plan, run_ids)


def plan_verify(store: ArtifactStore, problems_ref: ArtifactRef, completions_ref: ArtifactRef,
                config: VerifyConfig) -> ShardPlan:
    params = params_of(config)
    params.pop("VerifyConfig.workers")  # parallelism does not change verdicts
    shard_count = -(-int(completions_ref.rows or 0) // max(1, config.shard_rows))
    return _plan(store, "verdicts", params, [problems_ref, completions_ref], shard_count)


def verify_shards(store: ArtifactStore, plan: ShardPlan, problems_ref: ArtifactRef,
                  completions_ref: ArtifactRef, config: VerifyConfig, indices: Sequence[int],
                  on_shard: Callable[[int, int], None] | None = None) -> None:
    """Verify and commit the given shards with one warm sandbox pool."""
    import pyarrow as pa

    from restrl.sampling import shards
    from restrl.schemas import VERDICTS

    if not indices:
        return
    problems = index_problems(read_problems_artifact(store, problems_ref))
    completions = store.read_table(completions_ref).to_pylist()
    pieces = shards(list(enumerate(completions)), config.shard_rows)
    domains = sorted({domain for domain, _ in problems})
    with config.verifier(domains) as verifier:
        for index in indices:
            piece = pieces[index]
            verdicts = verifier.verify([problems[c["domain"], c["problem_id"]] for _, c in piece],
                                       [c["program"] for _, c in piece])
            rows = [{"row": row, "domain": c["domain"], "problem_id": c["problem_id"],
                     "sample_idx": c["sample_idx"], **v.to_row()}
                    for (row, c), v in zip(piece, verdicts, strict=True)]
            store.put_shard(pa.Table.from_pylist(rows, schema=VERDICTS), plan.kind, plan.key,
                            index)
            if on_shard is not None:
                on_shard(index, plan.shards)


def verify(store: ArtifactStore, problems_ref: ArtifactRef, completions_ref: ArtifactRef,
           config: VerifyConfig, run_ids: RunIds | None = None,
           on_shard: Callable[[int, int], None] | None = None) -> ArtifactRef:
    """One verdict per completion (same order), committed shard by shard (resumable)."""
    plan = plan_verify(store, problems_ref, completions_ref, config)
    verify_shards(store, plan, problems_ref, completions_ref, config, plan.pending, on_shard)
    return commit_shards(store, plan, run_ids)


def build_rest_data(store: ArtifactStore, problems_ref: ArtifactRef,
                    completions_ref: ArtifactRef, verdicts_ref: ArtifactRef, config: Any,
                    model: str = TINY_MODEL, run_ids: RunIds | None = None
                    ) -> tuple[ArtifactRef, dict[str, float]]:
    """ReST training rows (grpo / dpo / sft) from verified samples; returns the stats too."""
    from restrl.rest import build_rest_data as build
    from restrl.rest import join_samples

    kind = f"{config.mode}_data"
    params = params_of(config)
    parents = [problems_ref, completions_ref, verdicts_ref]
    key = artifact_key(kind, params, parents)
    if (found := store.find(kind, key)) is not None:
        return found, store.manifest(found.uri).extra.get("stats", {})
    problems = read_problems_artifact(store, problems_ref)
    samples = join_samples(store.read_table(completions_ref), store.read_table(verdicts_ref))
    model_path, _ = resolve_model(store, model)
    table, stats = build(problems, samples, config, load_tokenizer(model_path))
    metrics = stats.as_metrics()
    ref = store.put_table(table, kind, params, parents, key=key,
                          run_ids=(run_ids or RunIds()).as_dict(), extra={"stats": metrics})
    return ref, metrics


def train_grpo(store: ArtifactStore, model: str, data_ref: ArtifactRef,
               problems_refs: Sequence[ArtifactRef], config: Any, verify_config: VerifyConfig,
               work_dir: str | Path, run_ids: RunIds | None = None,
               on_log: Callable[[int, dict[str, float]], None] | None = None
               ) -> tuple[ArtifactRef, dict[str, Any]]:
    """Train the policy with ReST-GRPO; the checkpoint becomes a `policy` model artifact."""
    from restrl.training.grpo import train_grpo as train

    model_path, model_ref = resolve_model(store, model)
    params = params_of(config, **model_identity(store, model))
    parents = [data_ref, *problems_refs] + ([model_ref] if model_ref else [])
    key = artifact_key("policy", params, parents)
    if (found := store.find("policy", key)) is not None:
        return found, store.manifest(found.uri).extra
    problems = index_problems(p for ref in problems_refs
                              for p in read_problems_artifact(store, ref))
    rows = store.read_table(data_ref).to_pylist()
    domains = sorted({domain for domain, _ in problems})
    with verify_config.verifier(domains) as verifier:
        result = train(model_path, rows, problems, verifier, config, Path(work_dir) / key,
                       on_log=on_log)
    extra = {"rows_used": result.rows_used, "prompts_truncated": result.prompts_truncated,
             "base_model": model}
    if not is_main_process():  # under `accelerate launch`, rank 0 commits the checkpoint
        return ArtifactRef(store.uri("policy", key), "", "policy"), extra
    ref = store.put_model(result.model_dir, "policy", params, parents, key=key,
                          run_ids=(run_ids or RunIds()).as_dict(), extra=extra)
    return ref, extra


def train_preference(store: ArtifactStore, mode: str, model: str, data_ref: ArtifactRef,
                     config: Any, work_dir: str | Path, run_ids: RunIds | None = None,
                     on_log: Callable[[int, dict[str, float]], None] | None = None
                     ) -> tuple[ArtifactRef, dict[str, Any]]:
    """Train the policy with DPO (`dpo_data`) or SFT (`sft_data`); a `policy` artifact."""
    from restrl.training import preference

    trainers = {"dpo": preference.train_dpo, "sft": preference.train_sft}
    if mode not in trainers:
        raise ValueError(f"mode must be one of {sorted(trainers)}, got {mode!r}")
    model_path, model_ref = resolve_model(store, model)
    params = params_of(config, mode=mode, **model_identity(store, model))
    parents = [data_ref] + ([model_ref] if model_ref else [])
    key = artifact_key("policy", params, parents)
    if (found := store.find("policy", key)) is not None:
        return found, store.manifest(found.uri).extra
    rows = store.read_table(data_ref).to_pylist()
    result = trainers[mode](model_path, rows, config, Path(work_dir) / key, on_log=on_log)
    extra = {"rows_used": result.rows_used, "prompts_truncated": result.prompts_truncated,
             "base_model": model, "mode": mode}
    if not is_main_process():
        return ArtifactRef(store.uri("policy", key), "", "policy"), extra
    ref = store.put_model(result.model_dir, "policy", params, parents, key=key,
                          run_ids=(run_ids or RunIds()).as_dict(), extra=extra)
    return ref, extra


def summarize_verdicts(store: ArtifactStore, verdicts_ref: ArtifactRef) -> dict[str, float]:
    """Pass rates of a verdicts table (mean reward, strict pass@1 over samples, statuses)."""
    rows = store.read_table(verdicts_ref).to_pylist()
    n = len(rows) or 1
    metrics: dict[str, float] = {
        "mean_reward": sum(r["reward"] for r in rows) / n,
        "strict_accuracy": sum(r["strict"] for r in rows) / n,
        "programs": float(len(rows)),
    }
    statuses: Mapping[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1  # type: ignore[index]
    for status, count in statuses.items():
        metrics[f"status_{status}"] = count / n
    return metrics
