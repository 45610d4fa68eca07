"""Prompt formatting and stop strings per domain (DESIGN.md step 1, "Sample")."""

from restrl.prompts.formatting import (
    MARK,
    ChatTokenizer,
    chat_prompt,
    format_prompt,
    full_program,
    has_chat_template,
    plain_prompt,
    reply_prefix,
    user_message,
)
from restrl.prompts.stops import (
    CODE_FENCE,
    DEFAULT_STOPS,
    DS1000_STOPS,
    closing_stop,
    postprocess,
    stop_strings,
    trailing_text,
)

__all__ = [
    "CODE_FENCE",
    "DEFAULT_STOPS",
    "DS1000_STOPS",
    "MARK",
    "ChatTokenizer",
    "chat_prompt",
    "closing_stop",
    "format_prompt",
    "full_program",
    "has_chat_template",
    "plain_prompt",
    "postprocess",
    "reply_prefix",
    "stop_strings",
    "trailing_text",
    "user_message",
]
