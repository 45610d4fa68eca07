"""ReST data building (DESIGN.md step 3, REFERENCE.md section 3): verified samples -> GRPO /
DPO / SFT training rows.

Pure functions over pyarrow tables and dataclasses. The input `samples` table is the
completions table joined with its verdicts (`join_samples`): one row per (domain, problem_id,
sample_idx) with at least `code` (the sample cut at its first stop, continuing the problem's
init_code) and `reward`. A problem is known by (domain, problem_id): ids repeat across problem
sets. Samples are sorted by (domain, problem_id, sample_idx) before anything else, so the output
does not depend on the samples' row order; rows follow the order of `problems` (the original
writes them in its data files' order).
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

from restrl.artifacts.schemas import DPO_DATA, GRPO_DATA, SFT_DATA
from restrl.problems.model import Problem, ProblemKey, index_problems
from restrl.prompts import ChatTokenizer, closing_stop, format_prompt
from restrl.rest.config import RestDataConfig

KEYS: tuple[str, str, str] = ("domain", "problem_id", "sample_idx")
SAMPLE_COLUMNS: tuple[str, ...] = (*KEYS, "code", "reward")
VERDICT_COLUMNS: tuple[str, ...] = ("reward", "strict", "status")


class Sample(NamedTuple):
    """One verified completion of a problem."""

    sample_idx: int
    code: str
    reward: float


@dataclass
class RestDataStats:
    """What a build did, for logs and MLflow.

    problems: problems passed in. problems_seen: those with at least one sample.
    problems_kept: those that gave rows (grpo: std >= threshold, or every seen problem in basic
        mode; dpo: rewards not all equal; sft: at least one accepted completion).
    dropped_zero_variance: grpo: std < threshold (0 in basic mode); dpo: all rewards equal;
        sft: 0 (no variance filter).
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
        raise ValueError(
            f"{name}: {table.num_rows - unique} duplicate (domain, problem_id, sample_idx)"
        )


def _require_columns(table: pa.Table, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}; has {table.column_names}")


def join_samples(completions: pa.Table, verdicts: pa.Table) -> pa.Table:
    """Completions with their verdict's reward, strict and status, joined on (domain,
    problem_id, sample_idx) and sorted by those keys.

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


def group_samples(samples: pa.Table) -> dict[ProblemKey, list[Sample]]:
    """Samples per (domain, problem_id), each list sorted by sample_idx (keys in sorted order)."""
    _require_columns(samples, SAMPLE_COLUMNS, "samples")
    _check_unique_keys(samples, "samples")
    if samples["reward"].null_count:
        raise ValueError(f"samples: {samples['reward'].null_count} rows have a null reward")
    ordered = samples.select(list(SAMPLE_COLUMNS)).sort_by([(k, "ascending") for k in KEYS])
    groups: dict[ProblemKey, list[Sample]] = {}
    for row in ordered.to_pylist():
        key = (row["domain"], row["problem_id"])
        sample = Sample(int(row["sample_idx"]), row["code"] or "", float(row["reward"]))
        if math.isnan(sample.reward):  # NaN would pass `std < threshold` unnoticed
            raise ValueError(f"samples: reward of {'/'.join(key)}/{sample.sample_idx} is NaN")
        groups.setdefault(key, []).append(sample)
    return groups


def _problems_by_key(
    problems: Sequence[Problem], groups: dict[ProblemKey, list[Sample]]
) -> dict[ProblemKey, Problem]:
    """Problems by (domain, problem_id) in the order given (the original writes rows in its
    problems' file order); a repeated key or samples of an unknown problem are errors."""
    by_key = index_problems(problems)
    unknown = sorted(set(groups) - set(by_key))
    if unknown:
        examples = ["/".join(key) for key in unknown[:5]]
        raise ValueError(f"samples of {len(unknown)} unknown problems, e.g. {examples}")
    return by_key


# ---------------------------------------------------------------------------------------------
# The ReST filter, the best sample and prefix sampling (REFERENCE.md section 3)


def reward_std(samples: Sequence[Sample]) -> float:
    """Population std (ddof=0) of the rewards: sqrt(mean((r - mean(r))**2))."""
    return float(np.std([s.reward for s in samples], ddof=0))


def best_sample(samples: Sequence[Sample]) -> Sample:
    """The first sample (by sample_idx) with the highest reward."""
    return min(samples, key=lambda s: (-s.reward, s.sample_idx))


def preference_pair(samples: Sequence[Sample]) -> tuple[Sample, Sample] | None:
    """(chosen, rejected) of DPO, or None when all rewards are equal.

    The samples sorted by reward (stable, so in sample_idx order among equals): chosen is the
    last of that list (the highest reward, the latest sample among ties), rejected the first
    (the lowest reward, the earliest sample among ties).
    """
    ranked = sorted(sorted(samples, key=lambda s: s.sample_idx), key=lambda s: s.reward)
    if not ranked or ranked[0].reward >= ranked[-1].reward:
        return None
    return ranked[-1], ranked[0]


def solution_prefixes(code: str) -> list[str]:
    """The L partial solutions that become ReST-GRPO prefix rows, as the seed cuts them:
    `lines = code.rstrip().split("\\n")`, prefix k is lines[:k] each followed by "\\n"
    (k = 1 .. L; the last one is the whole solution, its end normalised to one "\\n").

    Not `restrl.evaluation.prm_prefixes`: that one keeps the text as it is, for a PRM to score.
    """
    lines = code.rstrip().split("\n")
    return ["".join(line + "\n" for line in lines[:k]) for k in range(1, len(lines) + 1)]


def prefix_count(n_sample: int | float, candidates: int) -> int:
    """How many prefixes to draw: n_sample if int, else ceil(n_sample * candidates); 0 if <= 0."""
    if n_sample <= 0 or candidates == 0:
        return 0
    if isinstance(n_sample, int):
        return n_sample
    return math.ceil(n_sample * candidates)


def problem_rng(seed: int, domain: str, problem_id: str) -> random.Random:
    """A `random.Random` seeded from sha256(f"{seed}:{domain}:{problem_id}") (stable, unlike
    hash())."""
    digest = hashlib.sha256(f"{seed}:{domain}:{problem_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def sample_prefix_lengths(
    candidates: int, count: int, alpha: float, rng: random.Random
) -> list[int]:
    """`count` prefix lengths k in 1..candidates, drawn with replacement, P(k) ∝ alpha**(k-1).

    The draw is `rng.choices(range(1, candidates + 1), weights=[alpha**(k - 1) ...], k=count)`,
    returned in draw order.
    """
    ks = range(1, candidates + 1)
    return rng.choices(ks, weights=[alpha ** (k - 1) for k in ks], k=count)


def chosen_prefix_lengths(candidates: int, key: ProblemKey, config: RestDataConfig) -> list[int]:
    """The k of every prefix row of an accepted problem with `candidates` (= L) prefixes."""
    if config.extract_all_lines:
        return list(range(1, candidates + 1))
    count = prefix_count(config.n_sample, candidates)
    rng = problem_rng(config.seed, *key)
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
    """ReST-GRPO rows: per kept problem a base row, then its prefix rows in draw order.

    Basic mode (`config.basic_mode`): a base row for every problem with samples, nothing else.
    """
    groups = group_samples(samples)
    by_key = _problems_by_key(problems, groups)
    stats = RestDataStats(mode="grpo", problems=len(by_key), problems_seen=len(groups))
    rows: list[dict[str, Any]] = []
    for key, problem in by_key.items():
        group = groups.get(key)
        if not group:
            continue
        if not config.basic_mode and reward_std(group) < config.std_accept_threshold:
            stats.dropped_zero_variance += 1
            continue
        stats.problems_kept += 1
        prompt = format_prompt(problem, tokenizer)
        rows.append(_grpo_row(problem, prompt, "", 0))
        best = best_sample(group)
        if best.reward < config.completion_accept_threshold:
            continue
        stats.accepted_best += 1
        if config.basic_mode:
            continue
        prefixes = solution_prefixes(best.code)
        for k in chosen_prefix_lengths(len(prefixes), key, config):
            rows.append(_grpo_row(problem, prompt, prefixes[k - 1], k))
    stats.rows_by_source = _count_sources(rows, ("base", "prefix"))
    return pa.Table.from_pylist(rows, schema=GRPO_DATA), stats


def _closed(problem: Problem, code: str, prompt: str, config: RestDataConfig) -> str:
    """The sample with the stop that closes its reply appended."""
    read = prompt if config.ds1000_closing_from_formatted_prompt else None
    return code + closing_stop(problem, read)


def build_dpo_data(
    problems: Sequence[Problem],
    samples: pa.Table,
    config: RestDataConfig,
    tokenizer: ChatTokenizer | None = None,
) -> tuple[pa.Table, RestDataStats]:
    """One pair per problem whose rewards differ (`preference_pair`).

    `chosen` / `rejected` are samples (continuations of the prompt, which ends with the reply
    prefix holding init_code) with their closing stop appended (`closing_stop`).
    """
    groups = group_samples(samples)
    by_key = _problems_by_key(problems, groups)
    stats = RestDataStats(mode="dpo", problems=len(by_key), problems_seen=len(groups))
    rows: list[dict[str, Any]] = []
    for key, problem in by_key.items():
        group = groups.get(key)
        if not group:
            continue
        if best_sample(group).reward >= config.completion_accept_threshold:
            stats.accepted_best += 1
        pair = preference_pair(group)
        if pair is None:
            stats.dropped_zero_variance += 1
            continue
        chosen, rejected = pair
        stats.problems_kept += 1
        prompt = format_prompt(problem, tokenizer)
        rows.append(
            {
                "problem_id": problem.problem_id,
                "domain": problem.domain,
                "prompt": prompt,
                "chosen": _closed(problem, chosen.code, prompt, config),
                "rejected": _closed(problem, rejected.code, prompt, config),
                "chosen_reward": chosen.reward,
                "rejected_reward": rejected.reward,
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
    """Every sample with reward >= completion_accept_threshold, in (domain, problem_id,
    sample_idx) order; `completion` is the sample with its closing stop appended."""
    groups = group_samples(samples)
    by_key = _problems_by_key(problems, groups)
    stats = RestDataStats(mode="sft", problems=len(by_key), problems_seen=len(groups))
    rows: list[dict[str, Any]] = []
    for key, problem in by_key.items():
        accepted = [
            s for s in groups.get(key, []) if s.reward >= config.completion_accept_threshold
        ]
        if not accepted:
            continue
        stats.problems_kept += 1
        stats.accepted_best += 1
        prompt = format_prompt(problem, tokenizer)
        for sample in accepted:
            rows.append(
                {
                    "problem_id": problem.problem_id,
                    "domain": problem.domain,
                    "prompt": prompt,
                    "completion": _closed(problem, sample.code, prompt, config),
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
