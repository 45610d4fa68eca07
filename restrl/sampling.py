"""Stage 1, step 1: draw n completions per problem and lay them out as a completions table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from restrl.configs import config
from restrl.generation import GenerationConfig, Generator
from restrl.problems.model import Problem
from restrl.prompts import format_prompt, full_program, postprocess, stop_strings


@config
class SamplingConfig:
    """How completions are drawn (the ReST-RL seed's `sample.py` flags)."""

    # --- generation ---
    n: int = Field(5, description="Completions per problem; GRPO's variance filter needs "
                                  "several.")
    temperature: float = Field(0.7, description="Softmax temperature of the sampling "
                                                "distribution (0: greedy, then n must be 1).")
    top_p: float = Field(1.0, description="Nucleus sampling mass (1.0: the whole distribution).")
    max_tokens: int = Field(1024, description="Most new tokens per completion.")
    seed: int = Field(0, description=(
        "Base of the generation seeds. The sampling step seeds shard i with "
        "seed + 100_003 * i, and each generate call adds the offset in its shard of its first "
        "problem, so a resumed or distributed run draws the same samples (changing "
        "shard_problems or problems_per_call changes which seed a problem gets)."))

    # --- batching and resume ---
    problems_per_call: int = Field(16, description="Prompts per generate call; larger batches "
                                                   "are faster on GPUs.")
    shard_problems: int = Field(32, description="Problems per committed shard: the unit a crash "
                                                "can lose.")

    @classmethod
    def toy(cls) -> SamplingConfig:
        """The toy preset's Stage 1 sampling: 8 samples at T 1.0, 96 tokens, 16-problem shards."""
        return cls(n=8, temperature=1.0, max_tokens=96, problems_per_call=16, shard_problems=16)

    @classmethod
    def toy_eval(cls) -> SamplingConfig:
        """The toy preset's evaluation sampling: 4 samples at T 0.7, 96 tokens."""
        return cls(n=4, temperature=0.7, max_tokens=96)


def sample_problems(problems: Sequence[Problem], generator: Generator, tokenizer: Any,
                    config: SamplingConfig, seed: int | None = None) -> list[dict[str, Any]]:
    """Completions rows (schema `artifacts.schemas.COMPLETIONS`) for `problems`, n each."""
    rows: list[dict[str, Any]] = []
    seed = config.seed if seed is None else seed
    for start in range(0, len(problems), config.problems_per_call):
        batch = problems[start:start + config.problems_per_call]
        # One call per stop set: a union would cut an APPS sample at DS1000's "END SOLUTION".
        by_stops: dict[tuple[str, ...], list[int]] = {}
        for offset, problem in enumerate(batch):
            by_stops.setdefault(tuple(stop_strings(problem.domain)), []).append(offset)
        results: dict[int, tuple[str, list[Any], int]] = {}
        for stops, offsets in by_stops.items():
            group = [batch[i] for i in offsets]
            prompts = [format_prompt(p, tokenizer) for p in group]
            gen_config = GenerationConfig(n=config.n, temperature=config.temperature,
                                          top_p=config.top_p, max_tokens=config.max_tokens,
                                          stop=stops, seed=seed + start + offsets[0])
            result = generator.generate(prompts, gen_config)
            per_prompt_tokens = result.prompt_tokens // max(1, len(group))
            for i, prompt, samples in zip(offsets, prompts, result.samples, strict=True):
                results[i] = (prompt, samples, per_prompt_tokens)
        for offset, problem in enumerate(batch):
            prompt, samples, per_prompt_tokens = results[offset]
            for idx, sample in enumerate(samples):
                code, _ = postprocess(sample.text, problem.domain)
                rows.append({
                    "domain": problem.domain,
                    "problem_id": problem.problem_id,
                    "sample_idx": idx,
                    "prompt": prompt,
                    "raw": sample.text,
                    "code": code,
                    "program": full_program(problem, code),
                    "hit_stop": sample.finish_reason == "stop",
                    "prompt_tokens": per_prompt_tokens,
                    "completion_tokens": sample.tokens,
                    "finish_reason": sample.finish_reason,
                })
    return rows


def shards(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """Consecutive slices of at most `size` items: the unit of commit and resume."""
    return [items[i:i + size] for i in range(0, len(items), max(1, size))]
