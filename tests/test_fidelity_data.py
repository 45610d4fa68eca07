"""Fidelity to the ReST-RL seed (REFERENCE.md sections 1 "Prompts, stops, samples" and 3
"ReST-GRPO data"): the exact prompt text, stops and training rows the authors' code produces,
on hand-made inputs. Expected values are written out here, not computed with restrl helpers.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from typing import Any

import pyarrow as pa
import pytest

from restrl.problems.apps import parse_apps_row
from restrl.problems.model import Problem
from restrl.prompts import (
    closing_stop,
    format_prompt,
    full_program,
    postprocess,
    stop_strings,
)
from restrl.rest import RestDataConfig, build_rest_data

APPS_STDIO_QUERY = (
    "Please provide a self-contained Python script using Standard Input format that solves the "
    "following problem in a markdown code block.\nProblem: "
)
APPS_CALL_QUERY = APPS_STDIO_QUERY.replace("Standard Input format", "Call-Based format")
BCB_QUERY = (
    "Please provide a self-contained Python script that solves the following problem in a "
    "markdown code block.\nProblem: "
)
SCRIPT_REPLY = (
    "Below is a self-contained Python script that solves the problem and realizes requested "
    "functionalities:\n```python\n"
)
DS1000_QUERY = "Please directly complete the required program to solve the following problem.\n"

# A Qwen3-like chat template: an assistant turn after the last user turn opens with an (empty)
# think block, and its content is lstripped of newlines (as Qwen3's own template does).
QWEN3_LIKE = (
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last_user = loop.index0 %}"
    "{%- endif %}{%- endfor %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'user' %}{{- '<|im_start|>user\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- elif m.role == 'assistant' %}"
    "{%- if loop.index0 > ns.last_user %}"
    "{{- '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' + m.content.lstrip('\\n') }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + m.content }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

INIT = "import sys\n"
SOLUTION = "a = 1\nb = 2\nc = a + b\nprint(c)\n\n"  # L = 4 lines once rstripped
WRONG = "print(0)\n"


def _local_tokenizer(chat_template: str | None):
    """A real transformers tokenizer built locally (no hub)."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab={"[UNK]": 0}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    tokenizer.chat_template = chat_template
    return tokenizer


def apps(pid: str = "1", prompt: str = "Print 3.", init: str = INIT, fn_name: str = "") -> Problem:
    spec: dict[str, Any] = {"inputs": ["\n"], "outputs": ["3\n"]}
    if fn_name:
        spec["fn_name"] = fn_name
    return Problem(
        problem_id=pid,
        domain="apps",
        prompt=prompt,
        init_code=init,
        tests=json.dumps(spec),
        entry_point=fn_name,
        io_mode="call" if fn_name else "stdio",
    )


def ds1000(
    pid: str = "1",
    prompt: str = "A:\n<code>\nx = 1\n</code>\nBEGIN SOLUTION\n<code>\n",
    init: str = "",
) -> Problem:
    return Problem(
        problem_id=pid, domain="ds1000", prompt=prompt, init_code=init, tests="", io_mode="ds1000"
    )


SAMPLE_SCHEMA = pa.schema(
    [
        ("domain", pa.string()),
        ("problem_id", pa.string()),
        ("sample_idx", pa.int64()),
        ("code", pa.string()),
        ("reward", pa.float64()),
    ]
)


def samples(problem: Problem, rows: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """One problem's samples (code, reward) in sample_idx order."""
    return [
        {
            "domain": problem.domain,
            "problem_id": problem.problem_id,
            "sample_idx": i,
            "code": code,
            "reward": reward,
        }
        for i, (code, reward) in enumerate(rows)
    ]


def table(*groups: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([row for group in groups for row in group], schema=SAMPLE_SCHEMA)


def column(t: pa.Table, name: str) -> list[Any]:
    return t[name].to_pylist()


# --- 1. Prompts, stops, samples ----------------------------------------------------------------


def test_apps_prompt_names_standard_input_format_and_opens_the_script_block():
    problem = apps(prompt="Print 3.")
    assert format_prompt(problem, None) == (
        APPS_STDIO_QUERY + "Print 3." + "\n" + SCRIPT_REPLY + INIT
    )


def test_apps_prompt_is_call_based_when_the_test_has_fn_name():
    problem = apps(prompt="Add.", init="def add(a, b):\n", fn_name="add")
    assert format_prompt(problem, None) == (
        APPS_CALL_QUERY + "Add." + "\n" + SCRIPT_REPLY + "def add(a, b):\n"
    )


def test_bigcodebench_prompt_is_the_apps_query_without_style_words():
    problem = Problem(
        problem_id="BigCodeBench/0",
        domain="bigcodebench",
        prompt="Do it.",
        init_code="def task_func():\n",
        tests="",
        io_mode="unittest",
    )
    assert format_prompt(problem, None) == (
        BCB_QUERY + "Do it." + "\n" + SCRIPT_REPLY + "def task_func():\n"
    )


def test_ds1000_prompt_is_the_query_and_the_bare_state_without_a_fence():
    problem = ds1000(prompt="Q <code>\n", init="x = ")
    assert format_prompt(problem, None) == DS1000_QUERY + "Q <code>\n" + "\n" + "x = "


def test_qwen3_template_puts_the_empty_think_block_before_the_reply_prefix():
    problem = apps(prompt="Print 3.")
    assert format_prompt(problem, _local_tokenizer(QWEN3_LIKE)) == (
        "<|im_start|>user\n" + APPS_STDIO_QUERY + "Print 3.<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n" + SCRIPT_REPLY + INIT
    )


def test_apps_reader_keeps_the_problem_text_without_style_words():
    original = parse_apps_row(
        {
            "problem_id": 7,
            "question": "Print 3.\n",
            "starter_code": "",
            "input_output": json.dumps({"inputs": ["\n"], "outputs": ["3\n"]}),
        }
    )
    seed = parse_apps_row(
        {
            "id": 8,
            "prompt": "Add.\n",
            "code": "def add(a, b):\n",
            "test": json.dumps({"inputs": [[1, 2]], "outputs": [3], "fn_name": "add"}),
        }
    )
    assert original.prompt == "Print 3.\n" and seed.prompt == "Add.\n"
    assert format_prompt(seed, None).startswith(APPS_CALL_QUERY + "Add.\n")


def test_stops_are_the_fence_and_the_seven_ds1000_tags():
    for domain in ("apps", "bigcodebench", "humaneval", "toy"):
        assert stop_strings(domain) == ["```"]
    assert stop_strings("ds1000") == [
        "</code>",
        "### SOLUTION END",
        "### END SOLUTION",
        "# SOLUTION END",
        "# END SOLUTION",
        "END SOLUTION",
        "SOLUTION END",
    ]


@pytest.mark.parametrize(
    ("domain", "sample", "code"),
    [
        ("apps", "x = 1\n```\ny = 2\n```", "x = 1\n"),
        ("ds1000", "r = 1\n# SOLUTION END\n</code>", "r = 1\n"),
        ("ds1000", "r = 1\n</code>\n### END SOLUTION", "r = 1\n"),
        ("ds1000", "r = 1\nEND SOLUTION", "r = 1\n"),
    ],
)
def test_a_sample_is_cut_at_its_first_stop(domain: str, sample: str, code: str):
    assert postprocess(sample, domain) == (code, True)


def test_the_judged_program_is_init_plus_the_rstripped_sample():
    assert full_program(apps(init="import sys\n"), "print(3)\n\n  \n") == "import sys\nprint(3)"


@pytest.mark.parametrize(
    ("prompt", "init", "stop"),
    [
        ("A:\n<code>\nx = 1\n</code>\nBEGIN SOLUTION\n<code>\n", "", "</code>"),
        ("def f(df):\n    ### BEGIN SOLUTION\n", "", "### END SOLUTION"),
        ("plt.plot(x)\n# SOLUTION START\n", "", "# SOLUTION END"),
        ("Fill in the blank.\n", "", ""),
        ("Q\n", "result = ...\n<code>\n", "</code>"),  # the plain prompt ends with init_code
    ],
)
def test_closing_stop_of_ds1000_closes_the_tag_its_prompt_opened(prompt, init, stop):
    assert closing_stop(ds1000(prompt=prompt, init=init)) == stop
    assert closing_stop(apps()) == "```"


# --- 3. ReST-GRPO data -------------------------------------------------------------------------


def test_grpo_drops_problems_whose_population_std_is_below_the_threshold():
    # [0, 0, 0, 0.1]: population std 0.0433 < 0.05 (sample std, ddof=1, would be 0.05)
    low = apps("low")
    high = apps("high")
    rows = table(
        samples(low, [(WRONG, 0.0), (WRONG, 0.0), (WRONG, 0.0), (WRONG, 0.1)]),
        samples(high, [(WRONG, 0.0), (WRONG, 0.0), (WRONG, 0.0), (WRONG, 0.2)]),
    )
    out, stats = build_rest_data([low, high], rows, RestDataConfig())
    assert column(out, "problem_id") == ["high"]
    assert stats.dropped_zero_variance == 1


def test_grpo_kept_problem_has_one_base_row_with_init_as_both_states():
    p = apps()
    out, _ = build_rest_data([p], table(samples(p, [(WRONG, 0.0), (WRONG, 0.5)])), RestDataConfig())
    assert out.to_pylist() == [
        {
            "problem_id": "1",
            "domain": "apps",
            "prompt": format_prompt(p, None),
            "init_state": INIT,
            "partial_state": INIT,
            "prefix_lines": 0,
            "source": "base",
        }
    ]


def test_grpo_prefixes_are_the_l_line_prefixes_the_last_the_whole_solution():
    p = apps()
    rows = table(samples(p, [(WRONG, 0.0), (SOLUTION, 1.0)]))
    out, _ = build_rest_data([p], rows, RestDataConfig(extract_all_lines=True))
    prefixes = [
        "a = 1\n",
        "a = 1\nb = 2\n",
        "a = 1\nb = 2\nc = a + b\n",
        "a = 1\nb = 2\nc = a + b\nprint(c)\n",
    ]
    base = format_prompt(p, None)
    assert column(out, "prefix_lines") == [0, 1, 2, 3, 4]
    assert column(out, "prompt") == [base] + [base + prefix for prefix in prefixes]
    assert column(out, "partial_state") == [INIT] + [INIT + prefix for prefix in prefixes]
    assert set(column(out, "init_state")) == {INIT}


def test_grpo_best_completion_is_the_first_sample_with_the_maximum_reward():
    p = apps()
    rows = table(samples(p, [(WRONG, 0.0), ("first = 1\n", 1.0), ("second = 1\n", 1.0)]))
    out, _ = build_rest_data([p], rows, RestDataConfig(extract_all_lines=True))
    assert column(out, "partial_state")[1:] == [INIT + "first = 1\n"]


def test_grpo_prefix_rows_need_a_best_reward_of_at_least_0_9():
    at, below = apps("at"), apps("below")
    rows = table(
        samples(at, [(WRONG, 0.0), (SOLUTION, 0.9)]),
        samples(below, [(WRONG, 0.0), (SOLUTION, 0.89)]),
    )
    out, _ = build_rest_data([at, below], rows, RestDataConfig(extract_all_lines=True))
    assert Counter(column(out, "problem_id")) == {"at": 5, "below": 1}


@pytest.mark.parametrize(
    ("n_sample", "count"),
    [(1, 1), (3, 3), (9, 9), (0.5, 2), (0.26, 2), (0.25, 1), (1.0, 4)],
)
def test_grpo_n_sample_is_a_count_if_int_and_ceil_of_l_times_a_ratio_if_float(n_sample, count):
    p = apps()
    rows = table(samples(p, [(WRONG, 0.0), (SOLUTION, 1.0)]))  # L = 4
    _, stats = build_rest_data([p], rows, RestDataConfig(n_sample=n_sample))
    assert stats.rows_by_source == {"base": 1, "prefix": count}
    assert count == (n_sample if isinstance(n_sample, int) else math.ceil(4 * n_sample))


def test_grpo_prefixes_are_drawn_with_replacement_with_weight_alpha_to_the_k_minus_1():
    p = apps("42")
    rows = table(samples(p, [(WRONG, 0.0), (SOLUTION, 1.0)]))
    out, _ = build_rest_data([p], rows, RestDataConfig(n_sample=12, alpha=0.5, seed=7))
    # The documented procedure, written out: sha256("seed:domain:problem_id") seeds the draw.
    digest = hashlib.sha256(b"7:apps:42").digest()
    expected = random.Random(int.from_bytes(digest[:8], "big")).choices(
        [1, 2, 3, 4], weights=[1.0, 0.5, 0.25, 0.125], k=12
    )
    assert column(out, "prefix_lines")[1:] == expected
    assert len(set(expected)) < len(expected)  # repeats: with replacement


def test_grpo_prefix_draws_favour_early_prefixes():
    long_code = "".join(f"x{i} = {i}\n" for i in range(10))  # L = 10
    problems = [apps(f"p{i:03d}") for i in range(200)]
    rows = table(*(samples(p, [(WRONG, 0.0), (long_code, 1.0)]) for p in problems))
    out, _ = build_rest_data(problems, rows, RestDataConfig(n_sample=10))
    counts = Counter(k for k in column(out, "prefix_lines") if k > 0)
    assert sum(counts.values()) == 2000 and set(counts) <= set(range(1, 11))
    # P(k) ∝ 0.95**(k-1): k=1 about 249 draws, k=10 about 158
    assert counts[1] > counts[10]
    assert sum(counts[k] for k in range(1, 6)) > sum(counts[k] for k in range(6, 11))


@pytest.mark.parametrize("n_sample", [0, -1, 0.0])
def test_grpo_basic_mode_gives_a_base_row_for_every_problem_without_the_std_filter(n_sample):
    flat, varied = apps("flat"), apps("varied")
    rows = table(
        samples(flat, [(SOLUTION, 1.0), (SOLUTION, 1.0)]),
        samples(varied, [(WRONG, 0.0), (SOLUTION, 1.0)]),
    )
    out, stats = build_rest_data([flat, varied], rows, RestDataConfig(n_sample=n_sample))
    assert list(zip(column(out, "problem_id"), column(out, "source"), strict=True)) == [
        ("flat", "base"),
        ("varied", "base"),
    ]
    assert stats.dropped_zero_variance == 0


def test_problems_with_the_same_id_in_two_domains_each_get_their_own_samples():
    a, d = apps("3"), ds1000("3", init="")
    rows = table(
        samples(a, [(WRONG, 0.0), ("apps_line = 1\n", 1.0)]),
        samples(d, [("r = 0\n", 0.0), ("ds_line = 1\n", 1.0)]),
    )
    out, stats = build_rest_data([a, d], rows, RestDataConfig(extract_all_lines=True))
    assert list(zip(column(out, "domain"), column(out, "partial_state"), strict=True)) == [
        ("apps", INIT),
        ("apps", INIT + "apps_line = 1\n"),
        ("ds1000", ""),
        ("ds1000", "ds_line = 1\n"),
    ]
    assert stats.problems_kept == 2


def test_dpo_chosen_is_the_last_and_rejected_the_first_of_the_stably_sorted_samples():
    p = apps()
    rows = table(
        samples(
            p, [("low0\n", 0.0), ("top1\n", 1.0), ("low2\n", 0.0), ("top3\n", 1.0), ("mid\n", 0.5)]
        )
    )
    out, _ = build_rest_data([p], rows, RestDataConfig(mode="dpo"))
    assert out.to_pylist() == [
        {
            "problem_id": "1",
            "domain": "apps",
            "prompt": format_prompt(p, None),
            "chosen": "top3\n```",
            "rejected": "low0\n```",
            "chosen_reward": 1.0,
            "rejected_reward": 0.0,
        }
    ]


def test_dpo_skips_a_problem_whose_rewards_are_all_equal():
    p = apps()
    rows = table(samples(p, [("a\n", 0.5), ("b\n", 0.5)]))
    out, _ = build_rest_data([p], rows, RestDataConfig(mode="dpo"))
    assert out.num_rows == 0


def test_sft_keeps_every_sample_at_or_above_0_9_with_its_closing_stop():
    a, d = apps(), ds1000()
    rows = table(
        samples(a, [("x = 1\n", 0.9), ("y = 1\n", 0.89), ("z = 1\n", 1.0)]),
        samples(d, [("r = 1\n", 1.0)]),
    )
    out, _ = build_rest_data([a, d], rows, RestDataConfig(mode="sft"))
    assert column(out, "completion") == ["x = 1\n```", "z = 1\n```", "r = 1\n</code>"]
    assert column(out, "reward") == [0.9, 1.0, 1.0]


def test_ds1000_closing_from_formatted_prompt_reads_the_chat_prompt_like_the_seed():
    d = ds1000()  # init_code "": under a chat template the prompt ends with the assistant header
    rows = table(samples(d, [("r = 0\n", 0.0), ("r = 1\n", 1.0)]))
    chatml = _local_tokenizer(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}"
    )
    ours, _ = build_rest_data([d], rows, RestDataConfig(mode="dpo"), chatml)
    seed, _ = build_rest_data(
        [d], rows, RestDataConfig(mode="dpo", ds1000_closing_from_formatted_prompt=True), chatml
    )
    assert (column(ours, "chosen"), column(seed, "chosen")) == (["r = 1\n</code>"], ["r = 1\n"])
