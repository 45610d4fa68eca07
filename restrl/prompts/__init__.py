"""Prompt formatting and stop strings per domain (DESIGN.md step 1, "Sample")."""

from restrl.prompts.formatting import (
    ChatTokenizer,
    format_prompt,
    full_program,
    reply_prefix,
    user_message,
)
from restrl.prompts.stops import (
    CODE_FENCE,
    DEFAULT_STOPS,
    postprocess,
    stop_strings,
    trailing_text,
)

__all__ = [
    "CODE_FENCE",
    "DEFAULT_STOPS",
    "ChatTokenizer",
    "format_prompt",
    "full_program",
    "postprocess",
    "reply_prefix",
    "stop_strings",
    "trailing_text",
    "user_message",
]
