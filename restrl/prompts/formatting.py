"""Prompt text per domain: the user message, the reply prefix, and the formatted prompt.

The formatted prompt ends with the start of the assistant reply, an open ```python fence that
already holds the problem's `init_code`, so the model continues the code and a sample's full
program is `init_code + code` (DESIGN.md step 1).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Protocol

from restrl.problems.model import DOMAINS, Problem

logger = logging.getLogger("restrl.prompts")

APPS_TEMPLATE = "Solve the following programming problem in Python.\n\n{prompt}\n\n{hint}"
# APPS hint by io_mode: stdio programs read stdin; call-based ones complete the starter code.
APPS_HINT_STDIO = (
    "Read the input from standard input and print the answer to standard output. "
    "Write the complete program."
)
APPS_HINT_CALL = (
    "Complete the given starter code; your solution is called as a function. "
    "Write the complete program."
)
# DS1000 prompts end where the solution goes; the test context inserts the snippet.
DS1000_TEMPLATE = (
    "{prompt}\n\nWrite only the code that replaces the solution placeholder, with no explanation."
)
FUNCTION_TEMPLATE = "Complete the following Python function.\n\n```python\n{code}```"
# Toy prompts are natural language; the signature to complete is the init_code.
TOY_TEMPLATE = "{prompt}\n\n" + FUNCTION_TEMPLATE
REPLY_FENCE = "```python\n"
FALLBACK_TEMPLATE = "### Problem\n{message}\n\n### Solution\n"


class ChatTokenizer(Protocol):
    """What `format_prompt` needs from a tokenizer (a transformers tokenizer fits)."""

    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def _ensure_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def user_message(problem: Problem) -> str:
    """The user turn for `problem`: its domain's instruction around the problem text."""
    domain = problem.domain
    if domain == "apps":
        hint = APPS_HINT_CALL if problem.io_mode == "call" else APPS_HINT_STDIO
        return APPS_TEMPLATE.format(prompt=problem.prompt.strip(), hint=hint)
    if domain == "bigcodebench":
        return problem.prompt  # the instruct prompt already says what to write
    if domain == "ds1000":
        return DS1000_TEMPLATE.format(prompt=problem.prompt.rstrip())
    if domain == "humaneval":
        return FUNCTION_TEMPLATE.format(code=_ensure_newline(problem.prompt))
    if domain == "toy":
        return TOY_TEMPLATE.format(
            prompt=problem.prompt.strip(), code=_ensure_newline(problem.init_code)
        )
    raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")


def reply_prefix(problem: Problem) -> str:
    """The start of the assistant reply: an open ```python fence followed by `init_code`."""
    return REPLY_FENCE + problem.init_code


def full_program(problem: Problem, code: str) -> str:
    """The program to verify: `init_code + code`, one rule for every domain.

    For DS1000 the "program" is the solution snippet the test context inserts; its init_code is
    usually empty, so the same rule gives the snippet itself.
    """
    return problem.init_code + code


# Tokenizers already warned about a missing chat template; weak so tokenizers can be freed.
_warned: weakref.WeakSet[Any] = weakref.WeakSet()
_warned_ids: set[int] = set()  # for objects that cannot be weakly referenced (None included)


def _warn_once(tokenizer: Any) -> None:
    try:
        if tokenizer in _warned:
            return
        _warned.add(tokenizer)
    except TypeError:
        if id(tokenizer) in _warned_ids:
            return
        _warned_ids.add(id(tokenizer))
    logger.warning(
        "tokenizer %s has no chat template; using the plain '### Problem / ### Solution' format",
        type(tokenizer).__name__,
    )


def format_prompt(problem: Problem, tokenizer: ChatTokenizer | None = None) -> str:
    """The text the model continues: chat-templated user message + `reply_prefix(problem)`.

    Without a chat template (or tokenizer) a plain "### Problem / ### Solution" layout is used
    and a warning is logged once per tokenizer.
    """
    message = user_message(problem)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        head = tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
        if not isinstance(head, str):
            raise TypeError(f"apply_chat_template returned {type(head).__name__}, not str")
    else:
        _warn_once(tokenizer)
        head = FALLBACK_TEMPLATE.format(message=message)
    return head + reply_prefix(problem)
