"""restrl.rest: the ReST filter, prefix sampling, DPO / SFT rows, aggregation (DESIGN.md step 3)."""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from typing import Any

import pyarrow as pa
import pytest

from restrl.problems.model import Problem
from restrl.prompts import format_prompt
from restrl.rest import (
    RestDataConfig,
    aggregate,
    build_rest_data,
    join_samples,
    line_prefixes,
)
from restrl.schemas import COMPLETIONS, DPO_DATA, GRPO_DATA, SFT_DATA, VERDICTS

INIT = "def solve(x):\n"
SOLUTION = "    y = x + 1\n    y = y * 2\n    y = y - 3\n    return y\n"  # L = 4 lines
WRONG = "    return 0\n"
SAMPLE_SCHEMA = pa.schema(
    [
        ("problem_id", pa.string()),
        ("sample_idx", pa.int64()),
        ("code", pa.string()),
        ("reward", pa.float64()),
    ]
)
GRPO_ALL = RestDataConfig(extract_all_lines=True)
BASE_ONLY = RestDataConfig(n_sample=0)


def problem(pid: str, init_code: str = INIT) -> Problem:
    return Problem(
        problem_id=pid, domain="toy", prompt=f"Task {pid}.", init_code=init_code, tests=""
    )


def samples(rows: list[tuple[str, int, str, float]]) -> pa.Table:
    return pa.Table.from_pylist(
        [dict(zip(SAMPLE_SCHEMA.names, row, strict=True)) for row in rows], schema=SAMPLE_SCHEMA
    )


def mixed(pid: str, code: str = SOLUTION, best: float = 1.0) -> list[tuple[str, int, str, float]]:
    """A problem with reward variance: one wrong sample, then one with reward `best`."""
    return [(pid, 0, WRONG, 0.0), (pid, 1, code, best)]


def column(table: pa.Table, name: str) -> list[Any]:
    return table[name].to_pylist()


def expected_draws(seed: int, pid: str, candidates: int, count: int, alpha: float) -> list[int]:
    """The documented procedure, written out independently of restrl.rest."""
    rng_seed = int.from_bytes(hashlib.sha256(f"{seed}:{pid}".encode()).digest()[:8], "big")
    ks = list(range(1, candidates + 1))
    return random.Random(rng_seed).choices(ks, weights=[alpha**k for k in ks], k=count)


# --- GRPO: the ReST filter ---------------------------------------------------------------------


def test_grpo_drops_zero_variance_problems_and_keeps_a_base_row():
    problems = [problem("zeros"), problem("ones"), problem("mixed")]
    table, stats = build_rest_data(
        problems,
        samples(
            [
                ("zeros", 0, WRONG, 0.0),
                ("zeros", 1, WRONG, 0.0),
                ("ones", 0, SOLUTION, 1.0),
                ("ones", 1, SOLUTION, 1.0),
                *mixed("mixed"),
            ]
        ),
        BASE_ONLY,
    )
    assert table.schema.equals(GRPO_DATA)
    assert table.to_pylist() == [
        {
            "problem_id": "mixed",
            "domain": "toy",
            "prompt": format_prompt(problems[2]),
            "init_state": INIT,
            "partial_state": INIT,
            "prefix_lines": 0,
            "source": "base",
        }
    ]
    assert (stats.problems_seen, stats.problems_kept, stats.dropped_zero_variance) == (3, 1, 2)
    assert stats.rows_by_source == {"base": 1, "prefix": 0}


def test_grpo_drops_a_problem_with_a_single_sample():
    table, stats = build_rest_data([problem("p")], samples([("p", 0, SOLUTION, 1.0)]), GRPO_ALL)
    assert table.num_rows == 0 and stats.dropped_zero_variance == 1


@pytest.mark.parametrize(("low", "kept"), [(0.0, True), (0.01, False)])
def test_grpo_keeps_std_exactly_at_the_threshold(low: float, kept: bool):
    # population std of [low, 0.5] is (0.5 - low) / 2: exactly 0.25 for low = 0
    config = RestDataConfig(std_accept_threshold=0.25, n_sample=0)
    rows = samples([("p", 0, WRONG, low), ("p", 1, SOLUTION, 0.5)])
    table, _ = build_rest_data([problem("p")], rows, config)
    assert table.num_rows == (1 if kept else 0)


def test_grpo_default_threshold_uses_population_std():
    # [0, 0, 0, 0.1]: population std 0.0433 < 0.05 (sample std, ddof=1, would be 0.05)
    rows = samples([("p", i, WRONG, r) for i, r in enumerate([0.0, 0.0, 0.0, 0.1])])
    table, stats = build_rest_data([problem("p")], rows, BASE_ONLY)
    assert table.num_rows == 0 and stats.dropped_zero_variance == 1


def test_grpo_best_below_completion_threshold_gives_the_base_row_only():
    rows = samples(mixed("p", best=0.8))
    table, stats = build_rest_data([problem("p")], rows, RestDataConfig(n_sample=5))
    assert column(table, "source") == ["base"]
    assert stats.accepted_best == 0


# --- GRPO: prefixes ----------------------------------------------------------------------------


def test_grpo_extract_all_lines_gives_every_proper_prefix():
    p = problem("p")
    table, stats = build_rest_data([p], samples(mixed("p")), GRPO_ALL)
    base = format_prompt(p)
    lines = SOLUTION.splitlines(keepends=True)
    assert column(table, "source") == ["base", "prefix", "prefix", "prefix"]
    assert column(table, "prefix_lines") == [0, 1, 2, 3]
    assert column(table, "prompt") == [
        base,
        base + lines[0],
        base + lines[0] + lines[1],
        base + lines[0] + lines[1] + lines[2],
    ]
    assert column(table, "partial_state") == [
        INIT,
        INIT + "    y = x + 1\n",
        INIT + "    y = x + 1\n    y = y * 2\n",
        INIT + "    y = x + 1\n    y = y * 2\n    y = y - 3\n",
    ]
    assert set(column(table, "init_state")) == {INIT}
    assert stats.rows_by_source == {"base": 1, "prefix": 3}


def test_line_prefixes_are_proper_and_keep_line_ends():
    assert line_prefixes("a\nb\nc") == ["a\n", "a\nb\n"]
    assert line_prefixes("only one line\n") == []
    assert line_prefixes("") == []


def test_grpo_one_line_best_solution_has_no_prefix_rows():
    rows = samples(mixed("p", code="    return x\n"))
    table, _ = build_rest_data([problem("p")], rows, GRPO_ALL)
    assert column(table, "source") == ["base"]


@pytest.mark.parametrize(
    ("n_sample", "count"),
    [(1, 1), (3, 3), (7, 7), (0.5, 2), (0.4, 2), (0.34, 2), (0.33, 1), (1.0, 3)],
)
def test_grpo_n_sample_is_a_count_if_int_and_a_ceiled_ratio_if_float(n_sample, count):
    # SOLUTION has 4 lines -> 3 candidate prefixes; ints may exceed that (drawn with replacement)
    config = RestDataConfig(n_sample=n_sample)
    table, stats = build_rest_data([problem("p")], samples(mixed("p")), config)
    assert stats.rows_by_source == {"base": 1, "prefix": count}
    assert count == (n_sample if isinstance(n_sample, int) else math.ceil(n_sample * 3))


@pytest.mark.parametrize(
    "config",
    [
        RestDataConfig(n_sample=0),
        RestDataConfig(n_sample=-2),
        RestDataConfig(n_sample=0.0),
        RestDataConfig(basic=True),
        RestDataConfig(basic=True, n_sample=10),
    ],
    ids=["zero", "negative", "zero-float", "basic", "basic-overrides-n_sample"],
)
def test_grpo_n_sample_at_most_zero_or_basic_keeps_base_rows_only(config):
    rows = samples(mixed("a") + mixed("b"))
    table, stats = build_rest_data([problem("a"), problem("b")], rows, config)
    assert column(table, "source") == ["base", "base"]
    assert stats.accepted_best == 2


def test_grpo_prefix_draws_follow_the_documented_rng_procedure():
    config = RestDataConfig(n_sample=6, seed=7)
    table, _ = build_rest_data([problem("p")], samples(mixed("p")), config)
    drawn = column(table, "prefix_lines")[1:]
    assert drawn == expected_draws(7, "p", candidates=3, count=6, alpha=0.95)
    lines = SOLUTION.splitlines(keepends=True)
    assert column(table, "partial_state")[1:] == [INIT + "".join(lines[:k]) for k in drawn]


def test_grpo_prefix_draws_favour_early_prefixes():
    long_code = "".join(f"    x = x + {i}\n" for i in range(10)) + "    return x\n"  # 10 cand.
    pids = [f"p{i:03d}" for i in range(200)]
    rows = samples([r for pid in pids for r in mixed(pid, code=long_code)])
    config = RestDataConfig(n_sample=10)
    table, _ = build_rest_data([problem(pid) for pid in pids], rows, config)
    counts = Counter(k for k in column(table, "prefix_lines") if k > 0)
    assert sum(counts.values()) == 2000 and set(counts) <= set(range(1, 11))
    # P(k) ∝ 0.95**k: k=1 about 249 draws, k=10 about 157
    assert counts[1] > counts[10]
    assert sum(counts[k] for k in range(1, 6)) > sum(counts[k] for k in range(6, 11))


def test_grpo_is_reproducible_and_independent_of_input_order():
    pids = [f"p{i}" for i in range(20)]
    problems = [problem(pid) for pid in pids]
    rows = samples([r for pid in pids for r in mixed(pid)])
    config = RestDataConfig(n_sample=4, seed=3)
    first, _ = build_rest_data(problems, rows, config)
    again, _ = build_rest_data(problems, rows, config)
    order = list(range(rows.num_rows))
    random.Random(1).shuffle(order)
    shuffled, _ = build_rest_data(problems[::-1], rows.take(order), config)
    other_seed, _ = build_rest_data(problems, rows, config.with_overrides(seed=4))
    assert first.equals(again) and first.equals(shuffled)
    assert not first.equals(other_seed)
    assert column(first, "problem_id") == sorted(column(first, "problem_id"))


def test_grpo_best_ties_go_to_the_lowest_sample_idx():
    other = "    z = x\n    return z\n"
    rows = samples([("p", 3, other, 1.0), ("p", 0, WRONG, 0.0), ("p", 1, SOLUTION, 1.0)])
    table, _ = build_rest_data([problem("p")], rows, GRPO_ALL)
    assert column(table, "partial_state")[1] == INIT + "    y = x + 1\n"


def test_grpo_uses_the_tokenizer_chat_template():
    class Tokenizer:
        chat_template = "fake"

        def apply_chat_template(self, conversation, **kwargs):
            return f"<user>{conversation[0]['content']}</user><assistant>"

    p = problem("p")
    table, _ = build_rest_data([p], samples(mixed("p")), BASE_ONLY, tokenizer=Tokenizer())
    assert column(table, "prompt") == [format_prompt(p, Tokenizer())]
    assert column(table, "prompt")[0].startswith("<user>")


def test_rest_data_rejects_unknown_problems_duplicate_keys_and_bad_rewards():
    with pytest.raises(ValueError, match="unknown problems"):
        build_rest_data([problem("p")], samples(mixed("q")), GRPO_ALL)
    with pytest.raises(ValueError, match="duplicate"):
        build_rest_data([problem("p")], samples(mixed("p") + mixed("p")), GRPO_ALL)
    with pytest.raises(ValueError, match="NaN"):
        build_rest_data([problem("p")], samples(mixed("p", best=float("nan"))), GRPO_ALL)
    with pytest.raises(ValueError, match="lacks columns"):
        build_rest_data([problem("p")], samples(mixed("p")).drop_columns(["reward"]), GRPO_ALL)


def test_rest_data_ignores_problems_without_samples():
    table, stats = build_rest_data([problem("p"), problem("idle")], samples(mixed("p")), BASE_ONLY)
    assert column(table, "problem_id") == ["p"]
    assert (stats.problems, stats.problems_seen, stats.problems_kept) == (2, 1, 1)
    assert stats.as_metrics()["rows_base"] == 1.0 and stats.as_metrics()["rows"] == 1.0


# --- DPO and SFT -------------------------------------------------------------------------------


def test_dpo_pairs_best_with_worst_when_rewards_differ():
    p, flat = problem("p"), problem("flat")
    rows = samples(
        [
            ("p", 0, "    return 1\n", 0.5),
            ("p", 1, WRONG, 0.0),
            ("p", 2, SOLUTION, 1.0),
            ("p", 3, "    return 2\n", 0.0),
            ("flat", 0, WRONG, 0.3),
            ("flat", 1, SOLUTION, 0.3),
        ]
    )
    table, stats = build_rest_data([p, flat], rows, RestDataConfig(mode="dpo"))
    assert table.schema.equals(DPO_DATA)
    assert table.to_pylist() == [
        {
            "problem_id": "p",
            "domain": "toy",
            "prompt": format_prompt(p),
            "chosen": SOLUTION,
            "rejected": WRONG,  # worst tie goes to the lowest sample_idx
            "chosen_reward": 1.0,
            "rejected_reward": 0.0,
        }
    ]
    assert (stats.problems_kept, stats.dropped_zero_variance) == (1, 1)
    assert stats.rows_by_source == {"pair": 1}


def test_sft_keeps_every_completion_at_or_above_the_threshold():
    p = problem("p")
    rows = samples(
        [("p", 2, "    return 2\n", 0.9), ("p", 0, WRONG, 0.89), ("p", 1, SOLUTION, 1.0)]
    )
    table, stats = build_rest_data([p], rows, RestDataConfig(mode="sft"))
    assert table.schema.equals(SFT_DATA)
    assert column(table, "completion") == [SOLUTION, "    return 2\n"]
    assert column(table, "reward") == [1.0, 0.9]
    assert set(column(table, "prompt")) == {format_prompt(p)}
    assert stats.rows_by_source == {"completion": 2}


# --- aggregate ---------------------------------------------------------------------------------


def test_aggregate_keeps_all_rows_and_shuffles_deterministically():
    a, _ = build_rest_data(
        [problem(f"a{i}") for i in range(10)],
        samples([r for i in range(10) for r in mixed(f"a{i}")]),
        BASE_ONLY,
    )
    b, _ = build_rest_data(
        [problem(f"b{i}") for i in range(10)],
        samples([r for i in range(10) for r in mixed(f"b{i}")]),
        BASE_ONLY,
    )
    once, twice = aggregate([a, b], seed=0), aggregate([a, b], seed=0)
    assert once.equals(twice)
    assert sorted(column(once, "problem_id")) == sorted(
        column(a, "problem_id") + column(b, "problem_id")
    )
    assert column(once, "problem_id") != column(pa.concat_tables([a, b]), "problem_id")
    assert not once.equals(aggregate([a, b], seed=1))


def test_aggregate_rejects_mismatched_schemas_and_no_tables():
    grpo, _ = build_rest_data([problem("p")], samples(mixed("p")), BASE_ONLY)
    sft, _ = build_rest_data([problem("p")], samples(mixed("p")), RestDataConfig(mode="sft"))
    with pytest.raises(ValueError, match="schema"):
        aggregate([grpo, sft], seed=0)
    with pytest.raises(ValueError, match="at least one"):
        aggregate([], seed=0)


# --- join_samples ------------------------------------------------------------------------------


def _completions(keys: list[tuple[str, int]]) -> pa.Table:
    rows = [
        {
            "problem_id": pid,
            "sample_idx": idx,
            "prompt": "P",
            "raw": "c",
            "code": f"c{idx}",
            "program": f"c{idx}",
            "hit_stop": True,
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "finish_reason": "stop",
        }
        for pid, idx in keys
    ]
    return pa.Table.from_pylist(rows, schema=COMPLETIONS)


def _verdicts(keys: list[tuple[str, int, float]]) -> pa.Table:
    rows = [
        {
            "row": i,
            "problem_id": pid,
            "sample_idx": idx,
            "reward": reward,
            "strict": reward > 0.999,
            "status": "passed",
            "tests_passed": 1,
            "tests_total": 1,
            "error": "",
            "seconds": 0.1,
            "isolation": "none",
        }
        for i, (pid, idx, reward) in enumerate(keys)
    ]
    return pa.Table.from_pylist(rows, schema=VERDICTS)


def test_join_samples_attaches_rewards_in_key_order():
    completions = _completions([("q", 0), ("p", 1), ("p", 0)])
    verdicts = _verdicts([("p", 0, 0.0), ("q", 0, 1.0), ("p", 1, 0.5), ("extra", 0, 1.0)])
    joined = join_samples(completions, verdicts)
    assert joined.column_names == [*COMPLETIONS.names, "reward", "strict", "status"]
    assert list(
        zip(
            column(joined, "problem_id"),
            column(joined, "sample_idx"),
            column(joined, "reward"),
            strict=True,
        )
    ) == [("p", 0, 0.0), ("p", 1, 0.5), ("q", 0, 1.0)]
    table, _ = build_rest_data([problem("p"), problem("q")], joined, BASE_ONLY)
    assert column(table, "problem_id") == ["p"]


def test_join_samples_errors_on_a_completion_without_verdict():
    with pytest.raises(ValueError, match="1 completions have no verdict"):
        join_samples(_completions([("p", 0), ("p", 1)]), _verdicts([("p", 0, 1.0)]))


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"mode": "ppo"},
        {"std_accept_threshold": -0.1},
        {"completion_accept_threshold": 1.5},
        {"n_sample": 1.5},
        {"n_sample": float("nan")},
        {"n_sample": True},
        {"alpha": 0.0},
        {"seed": 1.5},
        {"basic": True, "extract_all_lines": True},
    ],
)
def test_rest_config_rejects_invalid_values(overrides):
    with pytest.raises(ValueError):
        RestDataConfig(**overrides)


def test_rest_config_defaults_are_the_seeds():
    config = RestDataConfig()
    assert (config.mode, config.std_accept_threshold, config.completion_accept_threshold) == (
        "grpo",
        0.05,
        0.9,
    )
    assert (config.n_sample, config.alpha, config.extract_all_lines, config.basic) == (
        0.5,
        0.95,
        False,
        False,
    )
