"""vLLM backend: the offline `LLM` engine (GPU), imported only when this backend is built.

vLLM batches and schedules all prompts itself (continuous batching), so the whole prompt list
goes to one `llm.generate` call. The prompts go as token ids that restrl encodes itself
(`encode_prompts`): vLLM would tokenise a text prompt with special tokens, and a prompt already
rendered by a chat template (Llama, DeepSeek) would start with two BOS tokens. The sampling
knobs restrl does not set go at their neutral values (`NEUTRAL_SAMPLING`), whatever the model's
generation config says. Checked against vLLM's source (`SamplingParams`, `TokensPrompt`); vLLM
is not installed where restrl's tests run (they use a fake module).
"""

from __future__ import annotations

from typing import Any

from restrl.generation.base import (
    NEUTRAL_SAMPLING,
    BaseGenerator,
    GenerationConfig,
    GenerationError,
    GenerationResult,
    Sample,
    encode_prompts,
    make_result,
)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(
            "the 'vllm' generation backend needs vLLM and a GPU: run it with the vLLM "
            "environment's Python (/opt/vllm/bin/python in docker/Dockerfile.gpu; vLLM and "
            "Prefect cannot share one environment), or use backend 'hf', or 'openai' against "
            "a `vllm serve` server (docs/gpu.md)"
        ) from exc
    return vllm


class VLLMGenerator(BaseGenerator):
    """Sample with vLLM's offline engine.

    tensor_parallel_size: GPUs one model is sharded over.
    gpu_memory_utilization: fraction of each GPU's memory vLLM may take (weights + KV cache).
    seed: the engine's seed; a per-call `GenerationConfig.seed` also seeds each request.
    add_special_tokens: add the tokenizer's special tokens (BOS) when encoding; a prompt that
        already starts with the BOS keeps only that one.
    llm_options: passed to `vllm.LLM` as is (dtype, max_model_len, enforce_eager, ...).
    """

    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        seed: int = 0,
        add_special_tokens: bool = True,
        **llm_options: Any,
    ) -> None:
        self._vllm = _import_vllm()
        self.add_special_tokens = add_special_tokens
        self.llm = self._vllm.LLM(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            **llm_options,
        )

    def sampling_params(self, config: GenerationConfig) -> Any:
        """vLLM's `SamplingParams` for `config`, the knobs restrl does not set switched off."""
        return self._vllm.SamplingParams(
            n=config.n,
            temperature=config.temperature,
            top_p=config.top_p,
            max_tokens=config.max_tokens,
            stop=list(config.stop),
            seed=config.seed,
            **NEUTRAL_SAMPLING,
        )

    def token_prompts(self, prompts: list[str]) -> list[dict[str, list[int]]]:
        """vLLM `TokensPrompt`s (plain dicts) of `prompts`, encoded with one BOS at most."""
        ids = encode_prompts(self.llm.get_tokenizer(), prompts, self.add_special_tokens)
        if empty := [i for i, row in enumerate(ids) if not row]:
            raise ValueError(f"prompts {empty} encode to no tokens; a prompt must not be empty")
        return [{"prompt_token_ids": row} for row in ids]

    def _generate(self, prompts: list[str], config: GenerationConfig) -> GenerationResult:
        outputs = self.llm.generate(
            self.token_prompts(prompts), self.sampling_params(config), use_tqdm=False
        )
        samples = [[_to_sample(c) for c in out.outputs] for out in outputs]
        prompt_tokens = sum(len(out.prompt_token_ids or ()) for out in outputs)
        return make_result(samples, prompt_tokens)

    def close(self) -> None:
        self.llm = None


def _to_sample(completion: Any) -> Sample:
    reason = completion.finish_reason
    if reason not in ("stop", "length"):  # "abort" and the like: the engine dropped the request
        raise GenerationError(f"vLLM finished a sample with reason {reason!r}")
    # vLLM already leaves the stop string out of `text` (include_stop_str_in_output=False).
    return Sample(completion.text, len(completion.token_ids), reason)
