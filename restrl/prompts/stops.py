"""Stop strings per domain, and cutting a raw sample at them.

Every prompt ends inside an open code fence (see `reply_prefix`), so in chat mode the model
writes the whole continuation inside that fence and a sample ends at the closing fence "```".
The classic HumanEval completion stops ("\\ndef ", "\\nclass ", "\\nif __name__", "\\nprint(",
"\\n#") are deliberately left out: they assume a base model that continues a bare function and
would wrongly cut a chat reply that defines a helper function or writes a comment.
"""

from __future__ import annotations

from restrl.problems.model import DOMAINS

CODE_FENCE = "```"

# One list per domain so a domain can gain its own stops later without touching callers.
DEFAULT_STOPS: dict[str, tuple[str, ...]] = {domain: (CODE_FENCE,) for domain in DOMAINS}


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

    The sample continues code inside an already open fence, so a later opening fence
    ("```python\\n", the model restarting a code block) is treated like any fence: the code ends
    there. Nothing is stripped from the start, since the continuation's indentation follows
    `init_code`.
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
