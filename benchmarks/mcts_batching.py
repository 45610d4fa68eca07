"""MCTS wall time: all trees in lockstep (`run_mcts`) vs one tree at a time (`run_mcts_sequential`).

    python benchmarks/mcts_batching.py [--model DIR] [--problems 8] [--iterations 4]
                                       [--num-sample 4] [--max-tokens 64] [--batch-size 64]
                                       [--device cpu] [--plain-sampling]

Both runs search the same K toy test problems with the same budget, the hf backend and a real
sandbox `Verifier` (train phase). Lockstep makes one generate call (K leaves x num_sample rows)
and one verify call per iteration; sequential makes them per tree.

Deterministic setting. transformers seeds a generate call, not a prompt: a lockstep call's
samples depend on which other prompts share the batch, and greedy decoding cannot return
n > 1 samples per prompt. So by default the benchmark samples with `PromptSeededHF`: temperature
sampling done as Gumbel-max (argmax of logits / T + Gumbel noise, which draws from
softmax(logits / T)) with the noise of each row drawn from its own generator, seeded by the
row's prompt tokens and sample index. A prompt then gets the same samples in any batch, so both
modes grow identical trees (up to float rounding between padded and unpadded batches, which
could flip a near-tie; `identical_statistics` reports what happened). `--plain-sampling` uses
the backend's own per-call seeded sampling instead (timings only; the trees then differ).

What to expect: lockstep saves per-call and per-step overhead (4 generate calls instead of 32 at
the defaults) but a static batch keeps computing rows that already finished, so the gain is
largest where overhead dominates (a GPU) and smallest on one CPU thread, where the tiny model's
compute per row dominates.

The last line printed is one JSON object with `lockstep_s`, `sequential_s`, `speedup`
(sequential / lockstep) and `identical_statistics`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from restrl.generation import GenerationConfig
from restrl.generation.base import Sample
from restrl.generation.hf import HFGenerator
from restrl.sandbox import Verifier
from restrl.search import MCTSConfig, Tree, run_mcts, run_mcts_sequential, trees_to_tables
from restrl.toy import toy_problems


class GumbelNoise(LogitsProcessor):
    """logits / T + Gumbel noise, each row's noise from its own seeded generator; decoded
    greedily this samples from softmax(logits / T), row by row independently of the batch."""

    def __init__(self, seeds: Sequence[int], temperature: float) -> None:
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.temperature = temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        uniform = torch.stack([torch.rand(scores.shape[1], generator=g) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
        return scores.float() / self.temperature + gumbel.to(scores.device)


class PromptSeededHF(HFGenerator):
    """The hf backend with per-prompt seeded sampling (see the module docstring); top_p is not
    applied (the benchmark samples with top_p = 1). The call's own seed is ignored: row seeds
    come from `base_seed`, the prompt's tokens and the sample index."""

    def __init__(self, model: str, *, base_seed: int = 0, **options: Any) -> None:
        super().__init__(model, **options)
        self.base_seed = base_seed
        self._noise: GumbelNoise | None = None

    def _generate_batch(self, batch: list[list[int]],
                        config: GenerationConfig) -> list[list[Sample]]:
        n, temperature = config.n, config.temperature
        if temperature == 0:
            raise ValueError("PromptSeededHF samples; use temperature > 0")
        rows = [ids for ids in batch for _ in range(n)]  # n rows per prompt, decoded greedily
        seeds = [self._row_seed(ids, j) for ids in batch for j in range(n)]
        self._noise = GumbelNoise(seeds, temperature)
        try:
            samples = super()._generate_batch(rows, config.with_overrides(n=1, temperature=0))
        finally:
            self._noise = None
        flat = [row[0] for row in samples]
        return [flat[k:k + n] for k in range(0, len(flat), n)]

    def _generate_kwargs(self, config: GenerationConfig) -> dict[str, Any]:
        kwargs = super()._generate_kwargs(config)
        if self._noise is not None:
            kwargs["logits_processor"] = LogitsProcessorList([self._noise])
        return kwargs

    def _row_seed(self, ids: list[int], index: int) -> int:
        key = json.dumps([self.base_seed, ids, index]).encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % 2**63


def default_model() -> Path:
    """The embedded tiny model (built once per machine if missing)."""
    from restrl.toy.tiny_model import tiny_model_path

    return tiny_model_path()


def timed(search: Callable[[], list[Tree]]) -> tuple[float, list[Tree]]:
    start = time.perf_counter()
    trees = search()
    return time.perf_counter() - start, trees


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: the toy tiny model)")
    parser.add_argument("--problems", type=int, default=8, help="K toy test problems")
    parser.add_argument("--iterations", type=int, default=4, help="iteration_limit per tree")
    parser.add_argument("--num-sample", type=int, default=4)
    parser.add_argument("--num-decision", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--batch-size", type=int, default=64, help="prompts per model.generate")
    parser.add_argument("--workers", type=int, default=None, help="sandbox workers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto",
                        help="model dtype; float32 keeps batched and single rows closest on GPUs")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 gives steadier timings "
                             "on a shared machine")
    parser.add_argument("--plain-sampling", action="store_true",
                        help="the backend's per-call seeded sampling (trees then differ)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    model = str(args.model or default_model())
    options = {"batch_size": args.batch_size, "device": args.device, "dtype": args.dtype}
    if args.plain_sampling:
        generator: HFGenerator = HFGenerator(model, **options)
    else:
        generator = PromptSeededHF(model, base_seed=args.seed, **options)
    problems = toy_problems("test", n=args.problems, seed=args.seed)
    config = MCTSConfig(iteration_limit=args.iterations, num_sample=args.num_sample,
                        num_decision=args.num_decision, max_tokens=args.max_tokens,
                        temperature=args.temperature, seed=args.seed)
    tokenizer = generator.tokenizer

    with Verifier(args.workers, domains=["toy"]) as verifier:
        # Warm-up: the first generate call and the sandbox workers' first jobs pay one-off costs.
        run_mcts(problems[:1], generator, tokenizer, verifier,
                 MCTSConfig(iteration_limit=1, num_sample=1, max_tokens=4))
        sequential_s, sequential = timed(lambda: run_mcts_sequential(
            problems, generator, tokenizer, verifier, config))
        lockstep_s, lockstep = timed(lambda: run_mcts(
            problems, generator, tokenizer, verifier, config))

    identical = trees_to_tables(lockstep) == trees_to_tables(sequential)
    report = {
        "benchmark": "mcts_batching",
        "model": model,
        "device": str(generator.device),
        "sampling": "plain" if args.plain_sampling else "prompt_seeded",
        "problems": len(problems),
        "iteration_limit": args.iterations,
        "num_sample": args.num_sample,
        "max_tokens": args.max_tokens,
        "batch_size": args.batch_size,
        "nodes": sum(len(t.nodes) for t in lockstep),
        "completions": sum(len(n.completions) for t in lockstep for n in t.nodes),
        "lockstep_s": round(lockstep_s, 3),
        "sequential_s": round(sequential_s, 3),
        "speedup": round(sequential_s / lockstep_s, 2),
        "identical_statistics": identical,
    }
    print(f"sequential: {sequential_s:.2f}s  lockstep: {lockstep_s:.2f}s  "
          f"speedup: {report['speedup']}x  identical statistics: {identical}")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["identical_statistics"] else 1)
