"""Stop strings per domain, cutting a raw sample at them, and the stop that closes a reply.

The fenced domains (APPS, BigCodeBench, HumanEval, toy) open a ```python block in the reply
prefix, so a sample ends at the closing fence "```". DS1000's reply is bare code; its prompts
open `<code>`, `### BEGIN SOLUTION` or `# SOLUTION START`, so a sample ends at any of the seed's
closing tags (ReST-RL `prompts/stops.py`). The classic HumanEval completion stops
("\\ndef ", "\\nclass ", "\\nif __name__", "\\nprint(", "\\n#") are deliberately left out: they
assume a base model that continues a bare function and would wrongly cut a chat reply that
defines a helper function or writes a comment.
"""

from __future__ import annotations

from restrl.problems.model import DOMAINS, Problem
from restrl.prompts.formatting import plain_prompt, reply_prefix, user_message

CODE_FENCE = "```"
DS1000_STOPS: tuple[str, ...] = (
    "</code>",
    "### SOLUTION END",
    "### END SOLUTION",
    "# SOLUTION END",
    "# END SOLUTION",
    "END SOLUTION",
    "SOLUTION END",
)

DEFAULT_STOPS: dict[str, tuple[str, ...]] = {
    "apps": (CODE_FENCE,),
    "bigcodebench": (CODE_FENCE,),
    "ds1000": DS1000_STOPS,
    "humaneval": (CODE_FENCE,),
    "toy": (CODE_FENCE,),
}

# DS1000: how the prompt opens the solution -> the tag that closes it (checked on the prompt's
# end, in this order, as the seed's `process_sample` does).
DS1000_CLOSINGS: tuple[tuple[str, str], ...] = (
    ("<code>", "</code>"),
    ("### BEGIN SOLUTION", "### END SOLUTION"),
    ("# SOLUTION START", "# SOLUTION END"),
)


def stop_strings(domain: str) -> list[str]:
    """The stop strings for `domain` (a fresh list; callers may extend it)."""
    try:
        return list(DEFAULT_STOPS[domain])
    except KeyError:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}") from None


def _first_stop(sample: str, domain: str) -> tuple[int, str] | None:
    """(index, stop string) of the earliest stop in `sample`, or None."""
    hits = [(i, s) for s in stop_strings(domain) if (i := sample.find(s)) >= 0]
    # Earliest index wins; on a tie the longer stop, so its characters are not counted as trailing.
    return min(hits, key=lambda hit: (hit[0], -len(hit[1]))) if hits else None


def postprocess(sample: str, domain: str) -> tuple[str, bool]:
    """Cut a raw sample at its first stop string: returns (code, hit_stop).

    In the fenced domains a later opening fence ("```python\\n", the model restarting a code
    block) is treated like any fence: the code ends there. Nothing is stripped, since the
    continuation's indentation follows `init_code` (`full_program` strips the end).
    """
    hit = _first_stop(sample, domain)
    if hit is None:
        return sample, False
    return sample[: hit[0]], True


def trailing_text(sample: str, domain: str) -> str:
    """The characters after the first stop string ("" when there is none); GRPO penalises them."""
    hit = _first_stop(sample, domain)
    if hit is None:
        return ""
    index, stop = hit
    return sample[index + len(stop) :]


def closing_stop(problem: Problem, prompt: str | None = None) -> str:
    """The stop that closes a reply to `problem`; DPO / SFT append it to the sample so the
    model learns to end its answer.

    Fenced domains: "```". DS1000: the tag its prompt opened, read from the prompt's end
    (trailing whitespace ignored): `<code>` -> `</code>`, `### BEGIN SOLUTION` ->
    `### END SOLUTION`, `# SOLUTION START` -> `# SOLUTION END`, otherwise "" (nothing to close).
    The prompt read is `prompt` when given (the seed reads its chat-formatted prompt), else the
    plain prompt `query + "\\n" + reply_prefix`, which ends with the problem text when
    init_code is empty whatever chat template is used.
    """
    if problem.domain != "ds1000":
        stop_strings(problem.domain)  # an unknown domain raises
        return CODE_FENCE
    text = plain_prompt(user_message(problem), reply_prefix(problem)) if prompt is None else prompt
    tail = text.rstrip()
    for opening, closing in DS1000_CLOSINGS:
        if tail.endswith(opening):
            return closing
    return ""
