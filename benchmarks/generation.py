"""Generation throughput of the hf backend: batched vs one prompt at a time.

    python benchmarks/generation.py [--model DIR] [--prompts 32] [--max-tokens 64]
                                     [--batch-size 32] [--device cpu] [--repeats 1]

Both runs sample the same prompts with the same config (seeded); throughput is completion
tokens per second of wall time, counted by the backend, after a warm-up call (best of
`--repeats` timed calls). The last line printed is one JSON object with
`tokens_per_s_batched`, `tokens_per_s_single` and `speedup` (their ratio).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from restrl.generation import GenerationConfig, GenerationResult


def default_model() -> Path:
    """The embedded tiny model (built once per machine if missing)."""
    try:
        from restrl.toy.tiny_model import tiny_model_path
    except ImportError as exc:
        sys.exit(f"no --model given and the tiny model is unavailable ({exc}); pass --model DIR")
    return tiny_model_path()


def make_prompts(count: int) -> list[str]:
    """Code prompts of varied length, so batching has to pad (as real prompts do)."""
    bodies = [
        "def add(a, b):\n",
        "def count_even(xs):\n    total = 0\n    for x in xs:\n",
        "def reverse_words(text):\n    words = text.split()\n",
        "def fib(n):\n    if n < 2:\n        return n\n",
    ]
    return [f"# task {i}\n{bodies[i % len(bodies)]}" for i in range(count)]


def timed(generator: Any, prompts: list[str], config: GenerationConfig) -> tuple[float, int]:
    """(seconds, completion tokens) of one generate call."""
    start = time.perf_counter()
    result: GenerationResult = generator.generate(prompts, config)
    return time.perf_counter() - start, result.completion_tokens


def best_of(
    repeats: int, generator: Any, prompts: list[str], config: GenerationConfig
) -> tuple[float, int]:
    """The fastest of `repeats` timed calls (same seed, so the same tokens each time)."""
    return min(
        (timed(generator, prompts, config) for _ in range(max(1, repeats))), key=lambda r: r[0]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: the toy tiny model)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--n", type=int, default=1, help="samples per prompt")
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per batched call")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs; the best counts")
    parser.add_argument("--pass-samples", type=int, default=8,
                        help="samples per toy test problem for pass@1 / pass@k (0: skip)")
    args = parser.parse_args(argv)

    from restrl.generation.hf import HFGenerator

    model = str(args.model or default_model())
    batched = HFGenerator(model, device=args.device, batch_size=args.batch_size)
    # Same weights in memory, one prompt per generate call.
    single = HFGenerator(batched.model, tokenizer=batched.tokenizer, batch_size=1)
    prompts = make_prompts(args.prompts)
    config = GenerationConfig(
        n=args.n, temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed
    )
    # Warm-up with the timed calls' shapes: a first call pays for kernel selection and for
    # growing the allocator and KV cache (seconds on a GPU).
    batched.generate(prompts, config)
    single.generate(prompts[:2], config)
    seconds_b, tokens_b = best_of(args.repeats, batched, prompts, config)
    seconds_s, tokens_s = best_of(args.repeats, single, prompts, config)
    rate_b, rate_s = tokens_b / seconds_b, tokens_s / seconds_s
    report = {
        "benchmark": "generation",
        "backend": "hf",
        "model": model,
        "device": str(batched.device),
        "prompts": len(prompts),
        "n": args.n,
        "max_tokens": args.max_tokens,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "seconds_batched": round(seconds_b, 3),
        "seconds_single": round(seconds_s, 3),
        "tokens_batched": tokens_b,
        "tokens_single": tokens_s,
        "tokens_per_s_batched": round(rate_b, 1),
        "tokens_per_s_single": round(rate_s, 1),
        "speedup": round(rate_b / rate_s, 2),
    }
    if args.pass_samples:
        report.update(toy_pass_at_k(batched, args.pass_samples))
    print(f"batched: {tokens_b} tokens in {seconds_b:.2f}s = {rate_b:.1f} tokens/s")
    print(f"single:  {tokens_s} tokens in {seconds_s:.2f}s = {rate_s:.1f} tokens/s")
    print(f"speedup: {report['speedup']}x")
    for key in ("pass@1", f"pass@{args.pass_samples}"):
        if key in report:
            print(f"toy test split {key}: {report[key]:.3f}")
    print(json.dumps(report))
    return report


def toy_pass_at_k(generator: Any, samples: int) -> dict[str, Any]:
    """pass@1 and pass@`samples` of the model on the whole toy test split (T=0.7, sandboxed)."""
    from restrl.evaluation import sample_metrics
    from restrl.sampling import SamplingConfig, sample_problems
    from restrl.sandbox import Verifier
    from restrl.toy import toy_problems

    problems = toy_problems("test")
    config = SamplingConfig(n=samples, temperature=0.7, max_tokens=96, problems_per_call=32)
    rows = sample_problems(problems, generator, generator.tokenizer, config)
    by_id = {p.problem_id: p for p in problems}
    with Verifier(domains=["toy"]) as verifier:
        verdicts = verifier.verify([by_id[r["problem_id"]] for r in rows],
                                   [r["program"] for r in rows])
    metrics = sample_metrics([{"problem_id": r["problem_id"], "reward": v.reward,
                               "strict": v.strict} for r, v in zip(rows, verdicts, strict=True)],
                             ks=sorted({1, samples}))
    return {k: round(v, 4) for k, v in metrics.items() if k.startswith("pass@")} | {
        "pass_problems": len(problems), "pass_samples_per_problem": samples}


if __name__ == "__main__":
    main()
