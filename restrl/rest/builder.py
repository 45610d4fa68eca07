"""ReST data building (DESIGN.md step 3): verified samples -> GRPO / DPO / SFT training rows.

Pure functions over pyarrow tables and dataclasses. The input `samples` table is the
completions table joined with its verdicts (`join_samples`): one row per (problem_id,
sample_idx) with at least `code` (the continuation of the problem's init_code) and `reward`.
Samples are sorted by (problem_id, sample_idx) and problems by problem_id before anything else,
so the output depends neither on the input's row order nor on the order of `problems`.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from restrl.problems.model import Problem
from restrl.prompts import ChatTokenizer, format_prompt
from restrl.rest.config import RestDataConfig
from restrl.schemas import DPO_DATA, GRPO_DATA, SFT_DATA

KEYS: tuple[str, str] = ("problem_id", "sample_idx")
SAMPLE_COLUMNS: tuple[str, ...] = ("problem_id", "sample_idx", "code", "reward")
VERDICT_COLUMNS: tuple[str, ...] = ("reward", "strict", "status")
SCHEMA_BY_MODE: dict[str, pa.Schema] = {"grpo": GRPO_DATA, "dpo": DPO_DATA, "sft": SFT_DATA}


class Sample(NamedTuple):
    """One verified completion of a problem."""

    sample_idx: int
    code: str
    reward: float


@dataclass
class RestDataStats:
    """What a build did, for logs and MLflow.

    problems: problems passed in. problems_seen: those with at least one sample.
    problems_kept: those that gave rows (grpo: std >= threshold; dpo: best != worst; sft: at
        least one accepted completion). dropped_zero_variance: grpo: std < threshold; dpo: all
        rewards equal; sft: 0 (no variance filter).
    accepted_best: problems whose best reward >= completion_accept_threshold (grpo: among the
        kept ones, i.e. those that may give prefix rows).
    rows_by_source: rows per kind ("base"/"prefix" for grpo, "pair" for dpo, "completion" for sft).
    """

    mode: str
    problems: int = 0
    problems_seen: int = 0
    problems_kept: int = 0
    dropped_zero_variance: int = 0
    accepted_best: int = 0
    rows_by_source: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.rows_by_source.values())

    def as_metrics(self) -> dict[str, float]:
        """Flat numeric metrics (MLflow `log_metrics`): counts plus `rows_<source>`."""
        counts = {k: float(v) for k, v in asdict(self).items() if isinstance(v, int)}
        by_source = {f"rows_{k}": float(v) for k, v in self.rows_by_source.items()}
        return {**counts, **by_source, "rows": float(self.rows)}


# ---------------------------------------------------------------------------------------------
# Input


def _check_unique_keys(table: pa.Table, name: str) -> None:
    unique = table.group_by(list(KEYS)).aggregate([]).num_rows
    if unique != table.num_rows:
        raise ValueError(f"{name}: {table.num_rows - unique} duplicate (problem_id, sample_idx)")


def _require_columns(table: pa.Table, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; has {table.column_names}")


def join_samples(completions: pa.Table, verdicts: pa.Table) -> pa.Table:
    """Completions with their verdict's reward, strict and status, joined on (problem_id,
    sample_idx) and sorted by those keys.

    Raises ValueError when a completion has no verdict (it would silently vanish from the
    training data) or when either table repeats a key. Verdicts without a completion are
    ignored (e.g. a verdict table that covers more shards).
    """
    _require_columns(completions, KEYS, "completions")
    _require_columns(verdicts, (*KEYS, *VERDICT_COLUMNS), "verdicts")
    _check_unique_keys(completions, "completions")
    _check_unique_keys(verdicts, "verdicts")
    right = verdicts.select([*KEYS, *VERDICT_COLUMNS])
    right = right.append_column("_has_verdict", pa.array([True] * right.num_rows, pa.bool_()))
    joined = completions.join(right, keys=list(KEYS), join_type="left outer")
    missing = joined.filter(joined["_has_verdict"].is_null())
    if missing.num_rows:
        examples = missing.select(list(KEYS)).slice(0, 5).to_pylist()
        raise ValueError(f"{missing.num_rows} completions have no verdict, e.g. {examples}")
    joined = joined.drop_columns(["_has_verdict"])
    order = [*completions.column_names, *VERDICT_COLUMNS]
    return joined.select(order).sort_by([(k, "ascending") for k in KEYS])


def group_samples(samples: pa.Table) -> dict[str, list[Sample]]:
    """Samples per problem_id, each list sorted by sample_idx (problem ids in sorted order)."""
    _require_columns(samples, SAMPLE_COLUMNS, "samples")
    _check_unique_keys(samples, "samples")
    if samples["reward"].null_count:
        raise ValueError(f"samples: {samples['reward'].null_count} rows have a null reward")
    ordered = samples.select(list(SAMPLE_COLUMNS)).sort_by([(k, "ascending") for k in KEYS])
    groups: dict[str, list[Sample]] = {}
    for row in ordered.to_pylist():
        sample = Sample(int(row["sample_idx"]), row["code"] or "", float(row["reward"]))
        if math.isnan(sample.reward):  # NaN would pass `std < threshold` unnoticed
            raise ValueError(f"samples: reward of {row['problem_id']}/{sample.sample_idx} is NaN")
        groups.setdefault(row["problem_id"], []).append(sample)
    return groups


def _problems_by_id(
    problems: Sequence[Problem], groups: dict[str, list[Sample]]
) -> dict[str, Problem]:
    by_id: dict[str, Problem] = {}
    for problem in problems:
        if problem.problem_id in by_id:
            raise ValueError(f"problem_id {problem.problem_id!r} appears twice in problems")
        by_id[problem.problem_id] = problem
    unknown = sorted(set(groups) - set(by_id))
    if unknown:
        raise ValueError(f"samples of {len(unknown)} unknown problems, e.g. {unknown[:5]}")
    return dict(sorted(by_id.items()))


# ---------------------------------------------------------------------------------------------
# The ReST filter and prefix sampling (formulas of DESIGN.md step 3)


def reward_std(samples: Sequence[Sample]) -> float:
    """Population std (ddof=0) of the rewards: sqrt(mean((r - mean(r))**2))."""
    return float(np.std([s.reward for s in samples], ddof=0))


def best_sample(samples: Sequence[Sample]) -> Sample:
    """The sample with the highest reward; ties go to the lowest sample_idx."""
    return min(samples, key=lambda s: (-s.reward, s.sample_idx))


def worst_sample(samples: Sequence[Sample]) -> Sample:
    """The sample with the lowest reward; ties go to the lowest sample_idx."""
    return min(samples, key=lambda s: (s.reward, s.sample_idx))


def line_prefixes(code: str) -> list[str]:
    """Candidate prefixes p_k = "".join(lines[:k]) for k = 1 .. L-1 (lines keep their ends).

    Only proper prefixes: the whole solution (k = L) would leave nothing to generate. If
    init_code does not end in a newline, lines[0] finishes init_code's last line.
    """
    lines = code.splitlines(keepends=True)
    return ["".join(lines[:k]) for k in range(1, len(lines))]


def prefix_count(n_sample: int | float, candidates: int) -> int:
    """How many prefixes to draw: n_sample if int, else ceil(n_sample * candidates); 0 if <= 0."""
    if n_sample <= 0 or candidates == 0:
        return 0
    if isinstance(n_sample, int):
        return n_sample
    return math.ceil(n_sample * candidates)


def problem_rng(seed: int, problem_id: str) -> random.Random:
    """A `random.Random` seeded from sha256(f"{seed}:{problem_id}") (stable, unlike hash())."""
    digest = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def sample_prefix_lengths(
    candidates: int, count: int, alpha: float, rng: random.Random
) -> list[int]:
    """`count` prefix lengths k in 1..candidates, drawn with replacement, P(k) ∝ alpha**k.

    The draw is `rng.choices(range(1, candidates + 1), weights=[alpha**k ...], k=count)`,
    returned in draw order.
    """
    ks = range(1, candidates + 1)
    return rng.choices(ks, weights=[alpha**k for k in ks], k=count)


def chosen_prefix_lengths(lines: int, problem_id: str, config: RestDataConfig) -> list[int]:
    """The k of every prefix row for a best solution of `lines` lines (L - 1 candidates)."""
    candidates = max(lines - 1, 0)
    if config.extract_all_lines:
        return list(range(1, candidates + 1))
    if not config.keeps_prefixes:
        return []
    count = prefix_count(config.n_sample, candidates)
    rng = problem_rng(config.seed, problem_id)
    return sample_prefix_lengths(candidates, count, config.alpha, rng)


# ---------------------------------------------------------------------------------------------
# Row builders per mode


def _grpo_row(problem: Problem, prompt: str, prefix: str, k: int) -> dict[str, Any]:
    return {
        "problem_id": problem.problem_id,
        "domain": problem.domain,
        "prompt": prompt + prefix,
        "init_state": problem.init_code,
        "partial_state": problem.init_code + prefix,
        "prefix_lines": k,
        "source": "prefix" if k else "base",
    }


def build_grpo_data(
    problems: Sequence[Problem],
    samples: pa.Table,
    config: RestDataConfig,
    tokenizer: ChatTokenizer | None = None,
) -> tuple[pa.Table, RestDataStats]:
    """ReST-GRPO rows: per kept problem a base row, then its prefix rows in draw order."""
    groups = group_samples(samples)
    by_id = _problems_by_id(problems, groups)
    stats = RestDataStats(mode="grpo", problems=len(by_id), problems_seen=len(groups))
    rows: list[dict[str, Any]] = []
    for problem_id, problem in by_id.items():
        group = groups.get(problem_id)
        if not group:
            continue
        if reward_std(group) < config.std_accept_threshold:
            stats.dropped_zero_variance += 1
            continue
        stats.problems_kept += 1
        prompt = format_prompt(problem, tokenizer)
        rows.append(_grpo_row(problem, prompt, "", 0))
        best = best_sample(group)
        if best.reward < config.completion_accept_threshold:
            continue
        stats.accepted_best += 1
        lines = best.code.splitlines(keepends=True)
        for k in chosen_prefix_lengths(len(lines), problem_id, config):
            rows.append(_grpo_row(problem, prompt, "".join(lines[:k]), k))
    stats.rows_by_source = _count_sources(rows, ("base", "prefix"))
    return pa.Table.from_pylist(rows, schema=GRPO_DATA), stats


def build_dpo_data(
    problems: Sequence[Problem],
    samples: pa.Table,
    config: RestDataConfig,
    tokenizer: ChatTokenizer | None = None,
) -> tuple[pa.Table, RestDataStats]:
    """One pair per problem: chosen = best completion, rejected = worst, when rewards differ.

    `chosen` / `rejected` are completion codes (continuations), not full programs: the prompt
    already ends with the reply prefix holding init_code, as in every other mode.
    """
    groups = group_samples(samples)
    by_id = _problems_by_id(problems, groups)
    stats = RestDataStats(mode="dpo", problems=len(by_id), problems_seen=len(groups))
    rows: list[dict[str, Any]] = []
    for problem_id, problem in by_id.items():
        group = groups.get(problem_id)
        if not group:
            continue
        best, worst = best_sample(group), worst_sample(group)
        if best.reward >= config.completion_accept_threshold:
            stats.accepted_best += 1
        if best.reward == worst.reward:
            stats.dropped_zero_variance += 1
            continue
        stats.problems_kept += 1
        rows.append(
            {
                "problem_id": problem_id,
                "domain": problem.domain,
                "prompt": format_prompt(problem, tokenizer),
                "chosen": best.code,
                "rejected": worst.code,
                "chosen_reward": best.reward,
                "rejected_reward": worst.reward,
            }
        )
    stats.rows_by_source = {"pair": len(rows)}
    return pa.Table.from_pylist(rows, schema=DPO_DATA), stats


def build_sft_data(
    problems: Sequence[Problem],
    samples: pa.Table,
    config: RestDataConfig,
    tokenizer: ChatTokenizer | None = None,
) -> tuple[pa.Table, RestDataStats]:
    """Every completion with reward >= completion_accept_threshold, in (problem_id, sample_idx)
    order; `completion` is the code that continues the prompt."""
    groups = group_samples(samples)
    by_id = _problems_by_id(problems, groups)
    stats = RestDataStats(mode="sft", problems=len(by_id), problems_seen=len(groups))
    rows: list[dict[str, Any]] = []
    for problem_id, problem in by_id.items():
        accepted = [
            s for s in groups.get(problem_id, []) if s.reward >= config.completion_accept_threshold
        ]
        if not accepted:
            continue
        stats.problems_kept += 1
        stats.accepted_best += 1
        prompt = format_prompt(problem, tokenizer)
        for sample in accepted:
            rows.append(
                {
                    "problem_id": problem_id,
                    "domain": problem.domain,
                    "prompt": prompt,
                    "completion": sample.code,
                    "reward": sample.reward,
                }
            )
    stats.rows_by_source = {"completion": len(rows)}
    return pa.Table.from_pylist(rows, schema=SFT_DATA), stats


def _count_sources(rows: Sequence[dict[str, Any]], sources: Sequence[str]) -> dict[str, int]:
    counts = Counter(row["source"] for row in rows)
    return {source: counts.get(source, 0) for source in sources}


BUILDERS = {"grpo": build_grpo_data, "dpo": build_dpo_data, "sft": build_sft_data}


def build_rest_data(
    problems: Sequence[Problem],
    samples: pa.Table,
    config: RestDataConfig | None = None,
    tokenizer: ChatTokenizer | None = None,
) -> tuple[pa.Table, RestDataStats]:
    """The training rows of `config.mode` (GRPO_DATA, DPO_DATA or SFT_DATA) and their stats."""
    config = config or RestDataConfig()
    return BUILDERS[config.mode](problems, samples, config, tokenizer)


# ---------------------------------------------------------------------------------------------
# Several domains


def aggregate(tables: Sequence[pa.Table], seed: int = 0) -> pa.Table:
    """Concatenate tables of one schema (e.g. one per domain) and shuffle the rows.

    The permutation is `random.Random(seed).shuffle(list(range(rows)))`: the same tables in the
    same order and the same seed give the same table.
    """
    if not tables:
        raise ValueError("aggregate needs at least one table")
    schema = tables[0].schema
    for i, table in enumerate(tables[1:], start=1):
        if not table.schema.equals(schema):
            raise ValueError(f"table {i} has schema {table.schema}, expected {schema}")
    combined = pa.concat_tables(tables)
    order = list(range(combined.num_rows))
    random.Random(seed).shuffle(order)
    return combined.take(pa.array(order, pa.int64()))
