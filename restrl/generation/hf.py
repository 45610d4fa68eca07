"""transformers backend: batched `model.generate` with left padding, on CPU or GPU.

Prompts are sorted by token length before batching, so a batch pads little; the results are
put back in the caller's order. Stop strings go to `generate` (so a finished row stops early)
and are applied to the decoded text again, since `generate` only stops at token boundaries.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from restrl.generation.base import (
    BaseGenerator,
    FinishReason,
    GenerationConfig,
    GenerationResult,
    Sample,
    find_stop,
    make_result,
)


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pick_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        # bf16 halves memory and is fast on GPUs; on CPU float32 is the fast, exact choice.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class HFGenerator(BaseGenerator):
    """Sample with a transformers causal LM.

    model: a directory or hub id, or an already loaded model (then pass `tokenizer` too),
        e.g. the policy being trained.
    batch_size: prompts per `generate` call; each brings `n` rows, so a batch has
        batch_size * n sequences.
    device: "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    dtype: "auto" (bfloat16 on GPU, float32 on CPU), a torch dtype or its name.
    add_special_tokens: passed to the tokenizer (e.g. a BOS token); False when prompts were
        already rendered by a chat template that writes its own.
    """

    def __init__(
        self,
        model: str | PreTrainedModel,
        *,
        tokenizer: Any = None,
        batch_size: int = 16,
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        add_special_tokens: bool = True,
        trust_remote_code: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.add_special_tokens = add_special_tokens
        if isinstance(model, str):
            self.device = _pick_device(device)
            self.model = AutoModelForCausalLM.from_pretrained(
                model,
                dtype=_pick_dtype(dtype, self.device),
                trust_remote_code=trust_remote_code,
            ).to(self.device)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(
                model, trust_remote_code=trust_remote_code
            )
        else:
            if tokenizer is None:
                raise ValueError("pass `tokenizer` together with a loaded model")
            self.model = model
            self.device = model.device
        self.model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # generation appends on the right
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> frozenset[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return frozenset(ids)

    def format_chat(self, messages: list[dict[str, str]]) -> str:
        """Render chat messages with the tokenizer's template, ready for the assistant's turn."""
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _generate(self, prompts: list[str], config: GenerationConfig) -> GenerationResult:
        encoded: list[list[int]] = self.tokenizer(
            prompts, add_special_tokens=self.add_special_tokens
        )["input_ids"]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        samples: list[list[Sample]] = [[] for _ in prompts]
        # fork_rng: a seeded call must not reset the caller's global RNG (e.g. a training loop).
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=config.seed is not None):
            if config.seed is not None:
                torch.manual_seed(config.seed)
            for chunk in _chunks(order, self.batch_size):
                rows = self._generate_batch([encoded[i] for i in chunk], config)
                for i, row in zip(chunk, rows, strict=True):
                    samples[i] = row
        return make_result(samples, prompt_tokens=sum(len(ids) for ids in encoded))

    def _generate_batch(self, batch: list[list[int]], config: GenerationConfig) -> list[list[Sample]]:
        padded = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt")
        input_ids = padded["input_ids"].to(self.device)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=padded["attention_mask"].to(self.device),
                **self._generate_kwargs(config),
            )
        new_ids = output[:, input_ids.shape[1] :].tolist()
        rows = [self._to_sample(ids, config) for ids in new_ids]
        # num_return_sequences repeats each prompt n times in a row.
        return [rows[k : k + config.n] for k in range(0, len(rows), config.n)]

    def _generate_kwargs(self, config: GenerationConfig) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": config.max_tokens,
            "num_return_sequences": config.n,
            "pad_token_id": self.tokenizer.pad_token_id,
            "do_sample": config.temperature > 0,
        }
        if config.temperature > 0:
            # top_k=0 overrides any top-k in the model's generation config (vLLM/OpenAI use none).
            kwargs |= {"temperature": config.temperature, "top_p": config.top_p, "top_k": 0}
        else:
            kwargs |= {"temperature": None, "top_p": None, "top_k": None}
        if config.stop:
            kwargs |= {"stop_strings": list(config.stop), "tokenizer": self.tokenizer}
        return kwargs

    def _decode(self, ids: list[int]) -> str:
        # No clean-up of "tokenization spaces": it would rewrite code such as "a ." to "a.".
        return self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def _to_sample(self, ids: list[int], config: GenerationConfig) -> Sample:
        """Strip EOS/padding, cut at the first stop string, count tokens through the stop."""
        eos_at = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
        if eos_at is not None:
            ids = ids[:eos_at]
        else:
            while ids and ids[-1] == self.tokenizer.pad_token_id:  # rows that finished at a stop
                ids = ids[:-1]
        text = self._decode(ids)
        hit = find_stop(text, config.stop)
        if hit is not None:
            return Sample(text[: hit[0]], self._tokens_through_stop(ids, config.stop), "stop")
        ended = eos_at is not None or len(ids) < config.max_tokens
        reason: FinishReason = "stop" if ended else "length"
        return Sample(text, len(ids), reason)

    def _tokens_through_stop(self, ids: list[int], stops: Sequence[str]) -> int:
        """The shortest prefix of `ids` whose text already contains a stop string."""
        k = len(ids)
        # generate() stops right at the stop, so this loop usually decodes once or twice.
        while k > 1 and find_stop(self._decode(ids[: k - 1]), stops) is not None:
            k -= 1
        return k
