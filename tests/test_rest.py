"""restrl.rest: mechanics of the ReST builders (input checks, determinism, stats, aggregation,
the config). The seed's formulas are pinned in tests/test_fidelity_data.py."""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pytest

from restrl.artifacts.schemas import COMPLETIONS, VERDICTS
from restrl.problems.model import Problem
from restrl.prompts import format_prompt
from restrl.rest import (
    RestDataConfig,
    aggregate,
    build_rest_data,
    join_samples,
    solution_prefixes,
)

INIT = "def solve(x):\n"
SOLUTION = "    y = x + 1\n    y = y * 2\n    y = y - 3\n    return y\n"  # L = 4 lines
WRONG = "    return 0\n"
SAMPLE_SCHEMA = pa.schema(
    [
        ("domain", pa.string()),
        ("problem_id", pa.string()),
        ("sample_idx", pa.int64()),
        ("code", pa.string()),
        ("reward", pa.float64()),
    ]
)
GRPO_ALL = RestDataConfig(extract_all_lines=True)
BASE_ONLY = RestDataConfig(n_sample=0)


def problem(pid: str, domain: str = "toy", init_code: str = INIT) -> Problem:
    return Problem(
        problem_id=pid, domain=domain, prompt=f"Task {pid}.", init_code=init_code, tests=""
    )


def samples(rows: list[tuple[Any, ...]]) -> pa.Table:
    """Sample rows (problem_id, sample_idx, code, reward), domain "toy", or with the domain
    first."""
    full = [row if len(row) == 5 else ("toy", *row) for row in rows]
    return pa.Table.from_pylist(
        [dict(zip(SAMPLE_SCHEMA.names, row, strict=True)) for row in full], schema=SAMPLE_SCHEMA
    )


def mixed(pid: str, code: str = SOLUTION, best: float = 1.0) -> list[tuple[str, int, str, float]]:
    """A problem with reward variance: one wrong sample, then one with reward `best`."""
    return [(pid, 0, WRONG, 0.0), (pid, 1, code, best)]


def column(table: pa.Table, name: str) -> list[Any]:
    return table[name].to_pylist()


# --- GRPO -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("low", "kept"), [(0.0, True), (0.01, False)])
def test_grpo_keeps_std_exactly_at_the_threshold(low: float, kept: bool):
    # population std of [low, 0.5] is (0.5 - low) / 2: exactly 0.25 for low = 0
    config = RestDataConfig(std_accept_threshold=0.25, n_sample=1)
    rows = samples([("p", 0, WRONG, low), ("p", 1, SOLUTION, 0.5)])
    table, _ = build_rest_data([problem("p")], rows, config)
    assert table.num_rows == (1 if kept else 0)


def test_grpo_drops_a_problem_with_a_single_sample():
    table, stats = build_rest_data([problem("p")], samples([("p", 0, SOLUTION, 1.0)]), GRPO_ALL)
    assert table.num_rows == 0 and stats.dropped_zero_variance == 1


def test_grpo_best_below_completion_threshold_gives_the_base_row_only():
    rows = samples(mixed("p", best=0.8))
    table, stats = build_rest_data([problem("p")], rows, RestDataConfig(n_sample=5))
    assert column(table, "source") == ["base"]
    assert stats.accepted_best == 0


def test_grpo_is_reproducible_independent_of_sample_order_and_in_problem_order():
    pids = [f"p{i}" for i in range(20)]
    problems = [problem(pid) for pid in pids]
    rows = samples([r for pid in pids for r in mixed(pid)])
    config = RestDataConfig(n_sample=4, seed=3)
    first, _ = build_rest_data(problems, rows, config)
    again, _ = build_rest_data(problems, rows, config)
    order = list(range(rows.num_rows))
    random.Random(1).shuffle(order)
    shuffled, _ = build_rest_data(problems, rows.take(order), config)
    other_seed, _ = build_rest_data(problems, rows, config.with_overrides(seed=4))
    assert first.equals(again) and first.equals(shuffled)
    assert not first.equals(other_seed)
    # Rows follow the problems' order, as the original writes them in file order.
    assert list(dict.fromkeys(column(first, "problem_id"))) == pids
    reversed_rows, _ = build_rest_data(problems[::-1], rows, config)
    assert list(dict.fromkeys(column(reversed_rows, "problem_id"))) == pids[::-1]


def test_grpo_prefix_draws_of_a_problem_depend_on_its_domain():
    config = RestDataConfig(n_sample=8, seed=0)
    long_code = "".join(f"    x = x + {i}\n" for i in range(10))
    draws = {}
    for domain in ("apps", "ds1000"):
        rows = samples([(domain, *r) for r in mixed("7", code=long_code)])
        table, _ = build_rest_data([problem("7", domain)], rows, config)
        draws[domain] = column(table, "prefix_lines")[1:]
    assert draws["apps"] != draws["ds1000"]


def test_grpo_uses_the_tokenizer_chat_template():
    class Tokenizer:
        chat_template = "fake"

        def apply_chat_template(self, conversation, **kwargs):
            user, assistant = conversation
            return f"<user>{user['content']}</user><assistant>{assistant['content']}</assistant>"

    p = problem("p")
    table, _ = build_rest_data([p], samples(mixed("p")), BASE_ONLY, tokenizer=Tokenizer())
    assert column(table, "prompt") == [format_prompt(p, Tokenizer())]
    assert column(table, "prompt")[0].startswith("<user>")
    assert column(table, "prompt")[0].endswith("<assistant>```python\n" + INIT)


def test_rest_data_rejects_unknown_problems_duplicate_keys_and_bad_rewards():
    with pytest.raises(ValueError, match="unknown problems"):
        build_rest_data([problem("p")], samples(mixed("q")), GRPO_ALL)
    with pytest.raises(ValueError, match="unknown problems"):  # same id, another domain
        build_rest_data([problem("p", "apps")], samples(mixed("p")), GRPO_ALL)
    with pytest.raises(ValueError, match="duplicate"):
        build_rest_data([problem("p")], samples(mixed("p") + mixed("p")), GRPO_ALL)
    with pytest.raises(ValueError, match="NaN"):
        build_rest_data([problem("p")], samples(mixed("p", best=float("nan"))), GRPO_ALL)
    with pytest.raises(ValueError, match="lacks columns"):
        build_rest_data([problem("p")], samples(mixed("p")).drop_columns(["reward"]), GRPO_ALL)
    with pytest.raises(ValueError, match="lacks columns"):
        build_rest_data([problem("p")], samples(mixed("p")).drop_columns(["domain"]), GRPO_ALL)


def test_rest_data_rejects_a_problem_listed_twice_in_one_domain():
    with pytest.raises(ValueError, match="twice"):
        build_rest_data([problem("p"), problem("p")], samples(mixed("p")), GRPO_ALL)


def test_rest_data_ignores_problems_without_samples():
    table, stats = build_rest_data([problem("p"), problem("idle")], samples(mixed("p")), BASE_ONLY)
    assert column(table, "problem_id") == ["p"]
    assert (stats.problems, stats.problems_seen, stats.problems_kept) == (2, 1, 1)
    assert stats.as_metrics()["rows_base"] == 1.0 and stats.as_metrics()["rows"] == 1.0


def test_dpo_and_sft_stats_count_pairs_and_completions():
    rows = samples([*mixed("p"), ("flat", 0, WRONG, 0.3), ("flat", 1, SOLUTION, 0.3)])
    problems = [problem("p"), problem("flat")]
    _, dpo = build_rest_data(problems, rows, RestDataConfig(mode="dpo"))
    _, sft = build_rest_data(problems, rows, RestDataConfig(mode="sft"))
    assert (dpo.problems_kept, dpo.dropped_zero_variance, dpo.rows_by_source) == (1, 1, {"pair": 1})
    assert (sft.problems_kept, sft.rows_by_source) == (1, {"completion": 1})


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


def _with_domain(schema: pa.Schema) -> pa.Schema:
    return schema if "domain" in schema.names else schema.insert(0, pa.field("domain", pa.string()))


def _completions(keys: list[tuple[str, str, int]]) -> pa.Table:
    rows = [
        {
            "domain": domain,
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
        for domain, pid, idx in keys
    ]
    return pa.Table.from_pylist(rows, schema=_with_domain(COMPLETIONS))


def _verdicts(keys: list[tuple[str, str, int, float]]) -> pa.Table:
    rows = [
        {
            "row": i,
            "domain": domain,
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
        for i, (domain, pid, idx, reward) in enumerate(keys)
    ]
    return pa.Table.from_pylist(rows, schema=_with_domain(VERDICTS))


def test_join_samples_attaches_rewards_on_domain_problem_and_sample():
    completions = _completions(
        [("toy", "q", 0), ("toy", "p", 1), ("toy", "p", 0), ("apps", "p", 0)]
    )
    verdicts = _verdicts(
        [
            ("toy", "p", 0, 0.0),
            ("apps", "p", 0, 0.25),
            ("toy", "q", 0, 1.0),
            ("toy", "p", 1, 0.5),
            ("toy", "extra", 0, 1.0),
        ]
    )
    joined = join_samples(completions, verdicts)
    assert joined.column_names == [*completions.column_names, "reward", "strict", "status"]
    keys = ("domain", "problem_id", "sample_idx", "reward")
    assert list(zip(*(column(joined, k) for k in keys), strict=True)) == [
        ("apps", "p", 0, 0.25),
        ("toy", "p", 0, 0.0),
        ("toy", "p", 1, 0.5),
        ("toy", "q", 0, 1.0),
    ]


def test_join_samples_errors_on_a_completion_without_verdict():
    with pytest.raises(ValueError, match="1 completions have no verdict"):
        join_samples(
            _completions([("toy", "p", 0), ("apps", "p", 0)]), _verdicts([("toy", "p", 0, 1.0)])
        )


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
    assert (config.n_sample, config.alpha, config.extract_all_lines) == (0.5, 0.95, False)
    assert not config.basic_mode and not config.ds1000_closing_from_formatted_prompt


@pytest.mark.parametrize(
    ("overrides", "basic"),
    [
        ({"n_sample": 0}, True),
        ({"n_sample": -2}, True),
        ({"n_sample": 0.0}, True),
        ({"n_sample": 0, "extract_all_lines": True}, False),
        ({"n_sample": 1}, False),
    ],
)
def test_rest_config_basic_mode_is_n_sample_at_most_zero_without_extract_all_lines(
    overrides, basic
):
    assert RestDataConfig(**overrides).basic_mode is basic


def test_reward_distribution_is_per_problem_mean_and_population_std():
    from restrl.rest.plots import per_problem_rewards

    rows = [{"domain": "apps", "problem_id": "1", "reward": r} for r in (0.0, 1.0)] + [
        {"domain": "ds1000", "problem_id": "1", "reward": 1.0}]
    assert per_problem_rewards(rows) == ([0.5, 1.0], [0.5, 0.0])


def test_rest_config_documents_every_field_and_refuses_unknown_keys():
    from restrl.configs import undocumented

    assert undocumented(RestDataConfig) == []
    with pytest.raises(ValueError, match="n_samples"):
        RestDataConfig().with_overrides(n_samples=3)


def test_solution_prefixes_strip_the_end_and_close_every_line_with_a_newline():
    assert solution_prefixes("a = 1\nb = 2\n\n  ") == ["a = 1\n", "a = 1\nb = 2\n"]
    assert solution_prefixes("x = 1") == ["x = 1\n"]
    assert solution_prefixes(SOLUTION)[-1] == SOLUTION
