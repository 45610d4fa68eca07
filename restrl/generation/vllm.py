"""vLLM backend: the offline `LLM` engine (GPU), imported only when this backend is built.

vLLM batches and schedules all prompts itself (continuous batching), so the whole prompt list
goes to one `llm.generate` call.
"""

from __future__ import annotations

from typing import Any

from restrl.generation.base import (
    BaseGenerator,
    GenerationConfig,
    GenerationError,
    GenerationResult,
    Sample,
    make_result,
)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(
            "the 'vllm' generation backend needs vLLM and a GPU: pip install 'restrl[gpu]' "
            "(or use backend 'hf', or 'openai' against a vLLM server)"
        ) from exc
    return vllm


class VLLMGenerator(BaseGenerator):
    """Sample with vLLM's offline engine.

    tensor_parallel_size: GPUs one model is sharded over.
    gpu_memory_utilization: fraction of each GPU's memory vLLM may take (weights + KV cache).
    seed: the engine's seed; a per-call `GenerationConfig.seed` also seeds each request.
    llm_options: passed to `vllm.LLM` as is (dtype, max_model_len, enforce_eager, ...).
    """

    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        seed: int = 0,
        **llm_options: Any,
    ) -> None:
        self._vllm = _import_vllm()
        self.llm = self._vllm.LLM(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            **llm_options,
        )

    def _generate(self, prompts: list[str], config: GenerationConfig) -> GenerationResult:
        params = self._vllm.SamplingParams(
            n=config.n,
            temperature=config.temperature,
            top_p=config.top_p,
            max_tokens=config.max_tokens,
            stop=list(config.stop),
            seed=config.seed,
        )
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
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
