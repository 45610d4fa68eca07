"""Prompt text per domain: the query (user turn), the reply prefix, and the formatted prompt.

The formatted prompt ends *inside* the assistant's reply, after the reply prefix that already
holds the problem's `init_code` (REFERENCE.md section 1), so the model continues the code and a
sample's full program is `init_code + sample.rstrip()`. The chat template is applied to
`[user: query, assistant: prefix + MARK]` and the text is cut at `MARK`: the template decides
what comes before the prefix (on Qwen3 the empty think block), as in the ReST-RL seed's
`prompts/utils.make_raw_chat_prompt`.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Protocol

from restrl.problems.model import DOMAINS, Problem

logger = logging.getLogger("restrl.prompts")

# The ReST-RL seed's queries and replies (prompts/formatters.py). APPS names how the program runs.
APPS_QUERY = (
    "Please provide a self-contained Python script using {style} that solves the following "
    "problem in a markdown code block.\nProblem: "
)
APPS_STYLES = {"stdio": "Standard Input format", "call": "Call-Based format"}
BIGCODEBENCH_QUERY = (
    "Please provide a self-contained Python script that solves the following problem in a "
    "markdown code block.\nProblem: "
)
SCRIPT_REPLY = (
    "Below is a self-contained Python script that solves the problem and realizes requested "
    "functionalities:\n```python\n"
)
DS1000_QUERY = "Please directly complete the required program to solve the following problem.\n"

# restrl's own domains (not in the seed); the embedded tiny model was trained on this format.
FUNCTION_QUERY = "Complete the following Python function.\n\n```python\n{code}```"
TOY_QUERY = "{prompt}\n\n" + FUNCTION_QUERY
FUNCTION_REPLY = "```python\n"

# Where the reply prefix ends in the rendered chat template; must occur in no prompt.
MARK = "<|restrl-reply-prefix-ends-here|>"


class ChatTokenizer(Protocol):
    """What `format_prompt` needs from a tokenizer (a transformers tokenizer fits)."""

    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


def _ensure_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def user_message(problem: Problem) -> str:
    """The query (user turn) for `problem`: its domain's instruction and the problem text q.

    APPS says "Call-Based format" for problems whose tests name a `fn_name` (io_mode "call",
    which the APPS reader sets exactly then) and "Standard Input format" otherwise.
    """
    domain = problem.domain
    if domain == "apps":
        style = APPS_STYLES["call" if problem.io_mode == "call" else "stdio"]
        return APPS_QUERY.format(style=style) + problem.prompt
    if domain == "bigcodebench":
        return BIGCODEBENCH_QUERY + problem.prompt
    if domain == "ds1000":
        return DS1000_QUERY + problem.prompt
    if domain == "humaneval":
        return FUNCTION_QUERY.format(code=_ensure_newline(problem.prompt))
    if domain == "toy":
        return TOY_QUERY.format(
            prompt=problem.prompt.strip(), code=_ensure_newline(problem.init_code)
        )
    raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")


def reply_prefix(problem: Problem) -> str:
    """The start of the assistant reply, ending with `init_code`: APPS / BigCodeBench open a
    ```python block after the seed's sentence, DS1000 is the bare state (no fence), HumanEval /
    toy open a ```python block."""
    domain = problem.domain
    if domain in ("apps", "bigcodebench"):
        return SCRIPT_REPLY + problem.init_code
    if domain == "ds1000":
        return problem.init_code
    if domain in ("humaneval", "toy"):
        return FUNCTION_REPLY + problem.init_code
    raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")


def full_program(problem: Problem, code: str) -> str:
    """The program to verify: `init_code + code.rstrip()`, one rule for every domain.

    For DS1000 the "program" is the solution snippet the test context inserts; its init_code is
    usually empty, so the same rule gives the snippet itself.
    """
    return problem.init_code + code.rstrip()


def plain_prompt(query: str, reply: str) -> str:
    """The prompt without a chat template: `query + "\\n" + reply`."""
    return query + "\n" + reply


def chat_prompt(query: str, reply: str, tokenizer: ChatTokenizer) -> str:
    """The chat template applied to `[user: query, assistant: reply + MARK]`, cut at MARK.

    Raises ValueError when the rendered text lacks MARK (a template that drops or rewrites the
    assistant turn cannot hold a reply prefix).
    """
    conversation = [
        {"role": "user", "content": query},
        {"role": "assistant", "content": reply + MARK},
    ]
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, not str")
    head, found, _ = text.partition(MARK)
    if not found:
        raise ValueError("the chat template dropped the assistant turn: no place for the reply")
    return head


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
        "tokenizer %s has no chat template; the prompt is the plain query + newline + reply",
        type(tokenizer).__name__,
    )


def has_chat_template(tokenizer: Any) -> bool:
    """Whether `tokenizer` can render chat (None or an empty template cannot)."""
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def format_prompt(problem: Problem, tokenizer: ChatTokenizer | None = None) -> str:
    """The text the model continues: the query in the user turn and `reply_prefix(problem)`
    opening the assistant turn (`chat_prompt`); without a chat template (or tokenizer)
    `query + "\\n" + prefix`, with a warning logged once per tokenizer."""
    query, reply = user_message(problem), reply_prefix(problem)
    if has_chat_template(tokenizer):
        return chat_prompt(query, reply, tokenizer)  # type: ignore[arg-type]
    _warn_once(tokenizer)
    return plain_prompt(query, reply)
