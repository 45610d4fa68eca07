"""restrl.prompts: chat formatting, reply prefix, stop strings and post-processing."""

from __future__ import annotations

import logging

import pytest

from restrl.problems.model import DOMAINS, Problem
from restrl.prompts import (
    DEFAULT_STOPS,
    format_prompt,
    full_program,
    postprocess,
    reply_prefix,
    stop_strings,
    trailing_text,
    user_message,
)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HUMANEVAL_PROMPT = 'def add(a, b):\n    """Return a + b."""\n'


def _local_tokenizer(chat_template: str | None):
    """A real transformers tokenizer built locally (no hub): WordLevel over a tiny vocab."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<|im_start|>": 1, "<|im_end|>": 2, "def": 3, "return": 4}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    tokenizer.chat_template = chat_template
    return tokenizer


def _problem(domain: str = "humaneval", **overrides: object) -> Problem:
    fields: dict[str, object] = {
        "problem_id": f"{domain}/0",
        "domain": domain,
        "prompt": HUMANEVAL_PROMPT,
        "init_code": HUMANEVAL_PROMPT,
        "tests": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
        "entry_point": "add",
    }
    fields.update(overrides)
    return Problem(**fields)  # type: ignore[arg-type]


def test_format_prompt_applies_chat_template_and_ends_with_reply_prefix() -> None:
    problem = _problem()
    text = format_prompt(problem, _local_tokenizer(CHATML))

    expected_head = f"<|im_start|>user\n{user_message(problem)}<|im_end|>\n<|im_start|>assistant\n"
    assert text == expected_head + reply_prefix(problem)
    assert text.endswith("```python\n" + HUMANEVAL_PROMPT)


def test_format_prompt_without_chat_template_falls_back_and_warns_once_per_tokenizer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokenizer = _local_tokenizer(None)
    problem = _problem()
    with caplog.at_level(logging.WARNING, logger="restrl.prompts"):
        first = format_prompt(problem, tokenizer)
        second = format_prompt(problem, tokenizer)

    assert first == second
    assert first == f"### Problem\n{user_message(problem)}\n\n### Solution\n" + reply_prefix(
        problem
    )
    warnings = [r for r in caplog.records if r.name == "restrl.prompts"]
    assert len(warnings) == 1
    assert "chat template" in warnings[0].getMessage()


def test_format_prompt_warns_again_for_another_tokenizer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="restrl.prompts"):
        format_prompt(_problem(), _local_tokenizer(""))
        format_prompt(_problem(), _local_tokenizer(""))
    assert len([r for r in caplog.records if r.name == "restrl.prompts"]) == 2


def test_reply_prefix_opens_fence_with_init_code_in_every_domain() -> None:
    apps = _problem("apps", prompt="Print 1.", init_code="", io_mode="stdio")
    ds1000 = _problem("ds1000", prompt="Fill in.\nBEGIN SOLUTION\n", init_code="", io_mode="ds1000")
    toy = _problem("toy", prompt="Return x plus 3.", init_code="def f(x):\n")
    assert reply_prefix(apps) == "```python\n"
    assert reply_prefix(ds1000) == "```python\n"
    assert reply_prefix(toy) == "```python\ndef f(x):\n"


def test_user_message_wraps_each_domain() -> None:
    apps_stdio = user_message(_problem("apps", prompt="Add two numbers.", io_mode="stdio"))
    apps_call = user_message(_problem("apps", prompt="Add two numbers.", io_mode="call"))
    bcb = _problem("bigcodebench", prompt="Write a task_func that adds.", io_mode="unittest")
    ds1000 = user_message(_problem("ds1000", prompt="Problem text", io_mode="ds1000"))
    toy = user_message(_problem("toy", prompt="Return x plus 3.", init_code="def f(x):\n"))

    assert apps_stdio.startswith("Solve the following programming problem in Python.")
    assert "standard input" in apps_stdio and "starter code" in apps_call
    assert user_message(bcb) == bcb.prompt
    assert ds1000.startswith("Problem text") and "placeholder" in ds1000
    assert user_message(_problem()) == (
        "Complete the following Python function.\n\n```python\n" + HUMANEVAL_PROMPT + "```"
    )
    assert toy.startswith("Return x plus 3.") and toy.endswith("```python\ndef f(x):\n```")


def test_stop_strings_are_the_closing_fence_for_every_domain() -> None:
    assert set(DEFAULT_STOPS) == set(DOMAINS)
    for domain in DOMAINS:
        assert stop_strings(domain) == ["```"]
    with pytest.raises(ValueError):
        stop_strings("nope")


def test_postprocess_cuts_at_fence_and_keeps_indentation() -> None:
    sample = "    return a + b\n```\nThis adds the numbers."
    code, hit = postprocess(sample, "humaneval")
    assert (code, hit) == ("    return a + b\n", True)
    assert trailing_text(sample, "humaneval") == "\nThis adds the numbers."


def test_postprocess_returns_whole_sample_when_no_stop() -> None:
    sample = "    x = 1\n    return x\n"
    assert postprocess(sample, "apps") == (sample, False)
    assert trailing_text(sample, "apps") == ""


def test_postprocess_cuts_at_a_restarted_code_block() -> None:
    sample = "    return a + b\n```python\ndef add(a, b):\n    return a + b\n```"
    code, hit = postprocess(sample, "toy")
    assert (code, hit) == ("    return a + b\n", True)
    assert trailing_text(sample, "toy").startswith("python\ndef add")


def test_full_program_of_humaneval_sample_is_prompt_plus_body_and_compiles() -> None:
    problem = _problem()
    body = "    return a + b\n"
    code, _ = postprocess(body + "```\n", "humaneval")

    program = full_program(problem, code)
    assert program == HUMANEVAL_PROMPT + body
    namespace: dict[str, object] = {}
    exec(compile(program, "<sample>", "exec"), namespace)
    assert namespace["add"](1, 2) == 3  # type: ignore[operator]


def test_full_program_of_ds1000_is_the_snippet() -> None:
    problem = _problem("ds1000", prompt="Fill in.", init_code="", io_mode="ds1000")
    assert full_program(problem, "result = 1\n") == "result = 1\n"
