"""The generation contract shared by every backend: config, results, errors, stop handling.

This module is dependency-free (no torch, transformers, vllm or httpx), so importing
`restrl.generation` stays cheap; the heavy imports live in the backend modules.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]

# The sampling knobs GenerationConfig does not have, at the values that switch them off. A
# vLLM server fills any it is not sent from the model's generation_config.json (vLLM's
# `--generation-config auto`; Qwen2.5 asks for top_k 20 and repetition_penalty 1.05), so the
# HTTP and vLLM backends send them explicitly. top_k -1 means "off" in every vLLM release.
NEUTRAL_SAMPLING: dict[str, float | int] = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling parameters for one `generate` call (the same meaning in every backend).

    n: samples drawn per prompt.
    temperature: softmax temperature; 0 means greedy decoding (then `top_p` is ignored, and
        `n` must be 1: greedy samples are all the same, and vLLM rejects n > 1 for them).
    top_p: nucleus sampling mass in (0, 1]; 1.0 disables it. No top-k, min-p or repetition
        penalty is applied, whatever the model's own generation config says (Qwen's asks for
        top_k 20): every backend sends or sets their neutral values (`NEUTRAL_SAMPLING`), so
        the same config samples the same distribution everywhere.
    max_tokens: most new tokens per sample.
    stop: stop strings; a sample ends at the first one, which is not part of the returned text.
        A single string is accepted and wrapped in a tuple.
    seed: makes sampling repeatable: the same seed, prompts and config give the same samples
        on the same backend and hardware. None draws from the backend's running random state.
    """

    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        object.__setattr__(self, "stop", tuple(s for s in stop if s))  # "" would cut everything
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.temperature == 0 and self.n > 1:
            raise ValueError(
                f"temperature 0 is greedy decoding: its n={self.n} samples would all be the "
                "same, and vLLM rejects n > 1 with greedy sampling. Use n=1, or a temperature "
                "> 0 to draw several samples"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def with_overrides(self, **overrides: Any) -> GenerationConfig:
        """A copy with some fields replaced (unknown names raise TypeError)."""
        return dataclasses.replace(self, **overrides) if overrides else self


@dataclass
class Sample:
    """One completion.

    text: the generated text, cut before the first stop string.
    tokens: generated tokens, up to and including the one that completed the stop string;
        EOS and padding are not counted.
    finish_reason: "stop" when a stop string or EOS ended it, "length" when max_tokens did.
    """

    text: str
    tokens: int
    finish_reason: FinishReason


@dataclass
class GenerationResult:
    """The answer to one `generate` call: `samples[i]` holds the n samples of `prompts[i]`.

    prompt_tokens counts each prompt once (not once per sample), like the OpenAI usage block;
    completion_tokens is the sum of the samples' `tokens`.
    """

    samples: list[list[Sample]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def texts(self) -> list[list[str]]:
        return [[s.text for s in row] for row in self.samples]


class GenerationError(RuntimeError):
    """A backend could not produce samples; for HTTP backends it names the URL and status."""

    def __init__(
        self, message: str, *, url: str | None = None, status: int | None = None, attempts: int = 1
    ) -> None:
        self.url = url
        self.status = status
        self.attempts = attempts
        self.server_message = message
        where = f"{url}: " if url else ""
        code = f"HTTP {status}: " if status is not None else ""
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{where}{code}{message}{tries}")


@runtime_checkable
class Generator(Protocol):
    """Anything that samples completions for a batch of prompts."""

    def generate(
        self, prompts: Sequence[str], config: GenerationConfig | None = None, **overrides: Any
    ) -> GenerationResult:
        """n samples per prompt; `overrides` replace fields of `config` (or of the defaults)."""
        ...

    def close(self) -> None:
        """Free the backend's resources (model memory, HTTP connections)."""
        ...


class BaseGenerator(ABC):
    """Shared plumbing: config resolution, empty input, context-manager use."""

    def generate(
        self, prompts: Sequence[str], config: GenerationConfig | None = None, **overrides: Any
    ) -> GenerationResult:
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not a single string")
        cfg = (config or GenerationConfig()).with_overrides(**overrides)
        if not prompts:
            return GenerationResult()
        return self._generate(list(prompts), cfg)

    @abstractmethod
    def _generate(self, prompts: list[str], config: GenerationConfig) -> GenerationResult: ...

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to free
        pass

    def __enter__(self) -> BaseGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def find_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """(index, stop) of the earliest stop string in `text`; on a tie the longest stop wins."""
    hits = [(i, s) for s in stops if s and (i := text.find(s)) >= 0]
    return min(hits, key=lambda hit: (hit[0], -len(hit[1]))) if hits else None


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` cut before its first stop string, and whether one was found."""
    hit = find_stop(text, stops)
    return (text[: hit[0]], True) if hit else (text, False)


def make_result(samples: list[list[Sample]], prompt_tokens: int) -> GenerationResult:
    """A result whose completion_tokens is the sum of the samples' token counts."""
    completion = sum(s.tokens for row in samples for s in row)
    return GenerationResult(samples, prompt_tokens, completion)


def encode_prompts(
    tokenizer: Any, prompts: Sequence[str], add_special_tokens: bool = True
) -> list[list[int]]:
    """Token ids of `prompts`, with no doubled BOS.

    A prompt rendered by a chat template already starts with the BOS token's text (Llama,
    DeepSeek); tokenising it with special tokens adds a second BOS in front, which shifts the
    model off its training distribution. Such a leading duplicate is dropped, so chat-rendered
    and plain prompts both get exactly one BOS where the tokenizer uses one.
    """
    encoded = tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    if not add_special_tokens or bos is None:
        return [list(ids) for ids in encoded]
    return [
        list(ids[1:]) if len(ids) > 1 and ids[0] == ids[1] == bos else list(ids) for ids in encoded
    ]
