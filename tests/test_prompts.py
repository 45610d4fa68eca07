"""restrl.prompts: chat rendering at MARK, fallback, stop strings, post-processing, closing stop.

The seed's exact query / reply / stop strings are pinned in tests/test_fidelity_data.py.
"""

from __future__ import annotations

import logging

import pytest

from restrl.problems.model import DOMAINS, Problem
from restrl.prompts import (
    DEFAULT_STOPS,
    closing_stop,
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


def test_format_prompt_renders_the_reply_prefix_inside_the_assistant_turn() -> None:
    problem = _problem("apps", prompt="Print 1.", init_code="import sys\n", io_mode="stdio")
    text = format_prompt(problem, _local_tokenizer(CHATML))

    head = f"<|im_start|>user\n{user_message(problem)}<|im_end|>\n<|im_start|>assistant\n"
    assert text == head + reply_prefix(problem)
    assert "<|im_end|>" not in text[len(head) :]  # cut at the mark: the turn stays open


def test_format_prompt_without_chat_template_is_query_newline_prefix_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokenizer = _local_tokenizer(None)
    problem = _problem()
    with caplog.at_level(logging.WARNING, logger="restrl.prompts"):
        first = format_prompt(problem, tokenizer)
        second = format_prompt(problem, tokenizer)

    assert first == second == user_message(problem) + "\n" + reply_prefix(problem)
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


def test_format_prompt_rejects_a_template_that_drops_the_assistant_turn() -> None:
    class UserOnly:
        chat_template = "user only"

        def apply_chat_template(self, conversation, **kwargs):
            return f"<user>{conversation[0]['content']}</user>"

    with pytest.raises(ValueError, match="assistant turn"):
        format_prompt(_problem(), UserOnly())


def test_toy_and_humaneval_prompts_keep_their_chatml_format() -> None:
    # The embedded tiny model was trained on exactly these bytes (restrl.toy.tiny_model).
    toy = _problem("toy", prompt="Return x plus 3.", init_code="def f(x):\n")
    chatml = _local_tokenizer(CHATML)
    assert format_prompt(toy, chatml) == (
        "<|im_start|>user\nReturn x plus 3.\n\nComplete the following Python function.\n\n"
        "```python\ndef f(x):\n```<|im_end|>\n<|im_start|>assistant\n```python\ndef f(x):\n"
    )
    assert format_prompt(_problem(), chatml) == (
        "<|im_start|>user\nComplete the following Python function.\n\n```python\n"
        + HUMANEVAL_PROMPT
        + "```<|im_end|>\n<|im_start|>assistant\n```python\n"
        + HUMANEVAL_PROMPT
    )


def test_format_prompt_matches_the_tiny_models_template_stand_in() -> None:
    from restrl.toy.tiny_model import CHAT_TEMPLATE, _TemplateOnly

    toy = _problem("toy", prompt="Return x plus 3.", init_code="def f(x):\n")
    assert format_prompt(toy, _TemplateOnly()) == format_prompt(
        toy, _local_tokenizer(CHAT_TEMPLATE)
    )


def test_stop_strings_are_one_list_per_domain() -> None:
    assert set(DEFAULT_STOPS) == set(DOMAINS)
    for domain in ("apps", "bigcodebench", "humaneval", "toy"):
        assert stop_strings(domain) == ["```"]
    assert "</code>" in stop_strings("ds1000")
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


def test_postprocess_of_ds1000_counts_the_longest_stop_at_the_first_index_as_the_stop() -> None:
    sample = "result = 1\n### END SOLUTION\nmore"
    assert postprocess(sample, "ds1000") == ("result = 1\n", True)
    assert trailing_text(sample, "ds1000") == "\nmore"


def test_full_program_of_humaneval_sample_is_prompt_plus_body_and_compiles() -> None:
    problem = _problem()
    body = "    return a + b\n"
    code, _ = postprocess(body + "```\n", "humaneval")

    program = full_program(problem, code)
    assert program == HUMANEVAL_PROMPT + body.rstrip()
    namespace: dict[str, object] = {}
    exec(compile(program, "<sample>", "exec"), namespace)
    assert namespace["add"](1, 2) == 3  # type: ignore[operator]


def test_full_program_of_ds1000_is_the_snippet() -> None:
    problem = _problem("ds1000", prompt="Fill in.", init_code="", io_mode="ds1000")
    assert full_program(problem, "result = 1\n") == "result = 1"


def test_closing_stop_reads_the_plain_prompt_unless_given_a_prompt() -> None:
    ds1000 = _problem(
        "ds1000", prompt="A:\n<code>\nx = 1\n</code>\n<code>\n", init_code="", io_mode="ds1000"
    )
    assert closing_stop(ds1000) == "</code>"
    chat = format_prompt(ds1000, _local_tokenizer(CHATML))  # ends with the assistant header
    assert closing_stop(ds1000, chat) == ""
