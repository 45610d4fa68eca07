"""Sampling completions: one `Generator` protocol, three backends.

    gen = make_generator("hf", "path/to/model", batch_size=16)
    result = gen.generate(prompts, GenerationConfig(n=8, temperature=0.7, stop=("```",), seed=0))
    result.samples[i][j].text, .tokens, .finish_reason; result.prompt_tokens, .completion_tokens

Backends: "hf" (transformers, CPU or GPU), "vllm" (offline vLLM engine, GPU), "openai" (any
OpenAI-compatible endpoint, e.g. a vLLM server or `python -m restrl.generation.server`).
Importing this package loads no torch, transformers, vllm or httpx; the factory imports the
chosen backend only.
"""

from __future__ import annotations

from typing import Any

from restrl.generation.base import (
    BaseGenerator,
    FinishReason,
    GenerationConfig,
    GenerationError,
    GenerationResult,
    Generator,
    Sample,
    cut_at_stop,
    find_stop,
)

BACKENDS = ("hf", "vllm", "openai")

__all__ = [
    "BACKENDS",
    "BaseGenerator",
    "FinishReason",
    "GenerationConfig",
    "GenerationError",
    "GenerationResult",
    "Generator",
    "Sample",
    "cut_at_stop",
    "find_stop",
    "make_generator",
]


def make_generator(backend: str, model: str, **options: Any) -> Generator:
    """Build a generator; `options` go to the backend's constructor.

    hf: batch_size, device, dtype, add_special_tokens, trust_remote_code (see `HFGenerator`).
    vllm: tensor_parallel_size, gpu_memory_utilization, seed, and any `vllm.LLM` argument.
    openai: base_url, api_key, chat, prompts_per_request, max_concurrency, max_retries,
        backoff, max_backoff, timeout, extra_body (see `OpenAIGenerator`).
    """
    if backend == "hf":
        from restrl.generation.hf import HFGenerator

        return HFGenerator(model, **options)
    if backend == "vllm":
        from restrl.generation.vllm import VLLMGenerator

        return VLLMGenerator(model, **options)
    if backend == "openai":
        from restrl.generation.openai_api import OpenAIGenerator

        return OpenAIGenerator(model, **options)
    raise ValueError(f"unknown generation backend {backend!r}; expected one of {BACKENDS}")
