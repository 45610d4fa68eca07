"""MCTS wall time: all trees in lockstep (`run_mcts`) vs one tree at a time (`run_mcts_sequential`).

    python benchmarks/mcts_batching.py [--model DIR] [--problems 8] [--iterations 4]
                                       [--num-sample 4] [--max-tokens 64] [--batch-size 64]
                                       [--device cpu] [--threads N] [--repeats 3]
                                       [--plain-sampling]

Both runs search the same K toy test problems with the same budget, the hf backend's model and
a real sandbox `Verifier` (train phase). Lockstep makes one generate call (K leaves x num_sample
rows) and one verify call per iteration; sequential makes them per tree.

Deterministic setting. transformers seeds a generate call, not a prompt: a lockstep call's
samples depend on which other prompts share the batch, and greedy decoding cannot return
n > 1 samples per prompt. So by default the benchmark samples with `PromptSeededHF`: temperature
sampling done by inverse CDF (the first token whose cumulative softmax(logits / T) exceeds a
uniform draw, which draws from softmax(logits / T)) with each row's draws from its own
generator, seeded by the row's prompt tokens and sample index. A prompt then gets the same
samples in any batch, so both modes grow identical trees (up to float rounding between
batches of other sizes and padding, which could move a cumulative probability across a draw;
`identical_statistics` reports what happened, budgets included).
`--plain-sampling` uses the backend's own `generate` with per-call seeds instead (timings only;
the trees then differ).

`PromptSeededHF` decodes as a serving engine does, so that the benchmark measures the search's
batching rather than waste in the decoder: a prompt's n rows share one prefill, a prompt that
extends an earlier one (a leaf's extends its parent's) reuses that one's keys and values (as
vLLM's prefix caching does; `forget_prompts` empties them between the timed searches), and a row
that ends (EOS or a stop string) leaves the batch, where `model.generate`'s static batch would
keep computing it until the call's longest row ends. That way the lockstep search computed 4,612
row-steps (rows x decoding steps) at the defaults against the sequential search's 2,940 (its
longest row of 32 sets every row's length), which held lockstep to 1.6-2.8x on two CPU cores.
Both modes now compute the 2,738 that the samples need, and lockstep saves what is per call and
per step: 4 generate calls and 158 decoding steps instead of 29 calls and 735. The gain is
largest where that overhead dominates (a GPU, several CPU threads) and smallest on one CPU
thread (`--threads 1`), where the tiny model's compute per row dominates. (Those counts are of
the trees that the earlier Gumbel-max draws grew.) What lockstep cannot share bounds it: each
row's compute, each program's verification, its new prompt tokens. Work done per row in Python
counts there too, so it is kept out of the loop: one random number per row and step (Gumbel-max
drew one per vocabulary entry, 1,024 here) and the stop check through the Rust tokenizer
(`restrl.generation.hf.decode_texts`, which the hf backend's own stop watch uses); together
they were about 15% of lockstep's time. On a quiet 2-core machine lockstep was 2.75-3.15x
before that change and is 2.91-3.78x after it (five runs; it varies from one run to the next). Other
load slows the sequential search's many small steps most, so a loaded machine shows 4x and
more.

Timing: `--repeats` (sequential, lockstep) pairs, each mode reporting its fastest run; every run
must grow the same trees at the same budget (`search_budget`) for `identical_statistics`.

The last line printed is one JSON object with `lockstep_s`, `sequential_s`, `speedup`
(sequential / lockstep), every run's seconds, the budget and `identical_statistics`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache

from restrl.generation import GenerationConfig
from restrl.generation.base import Sample, find_stop
from restrl.generation.hf import HFGenerator, decode_texts
from restrl.sandbox import Verifier
from restrl.search import (
    MCTSConfig,
    run_mcts,
    run_mcts_sequential,
    search_budget,
    trees_to_tables,
)
from restrl.toy import toy_problems


class PromptSeededHF(HFGenerator):
    """Sampling with the hf backend's model and tokenizer whose samples depend on the prompt
    alone, computing nothing twice (see the module docstring). top_p is not applied (the
    benchmark samples with top_p = 1); the call's own seed is ignored: row seeds come from
    `base_seed`, the prompt's tokens and the sample index."""

    def __init__(self, model: str, *, base_seed: int = 0, **options: Any) -> None:
        super().__init__(model, **options)
        self.base_seed = base_seed
        # Per layer (keys, values) of every prompt prefilled so far, by its token ids.
        self._prompts: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        # A stop completed by the newest token lies in the last len(stop) tokens; the margin
        # covers tokens that decode to nothing (as the backend's own stop watch does).
        self.window = 8

    def _generate_batch(self, batch: list[list[int]],
                        config: GenerationConfig) -> list[list[Sample]]:
        if config.temperature == 0:
            raise ValueError("PromptSeededHF samples; use temperature > 0")
        n = config.n
        # One uniform per row and step, drawn up front from the row's own generator.
        uniforms = torch.stack([
            torch.rand(config.max_tokens,
                       generator=torch.Generator().manual_seed(self._row_seed(ids, j)))
            for ids in batch for j in range(n)]).to(self.device)
        generated: list[list[int]] = [[] for _ in range(len(uniforms))]
        with torch.inference_mode():
            logits, cache, mask, position = self._prefill(batch)
            # The n rows of a prompt share its prefill.
            cache.batch_repeat_interleave(n)
            logits, mask = logits.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
            position = position[:, -1:].repeat_interleave(n, 0)
            live = list(range(len(generated)))
            for step in range(config.max_tokens):
                tokens = inverse_cdf(logits, uniforms[live, step], config.temperature)
                for row, token in zip(live, tokens, strict=True):
                    generated[row].append(token)
                keep = self._running(live, generated, config.stop)
                if not keep or step + 1 == config.max_tokens:
                    break
                if len(keep) < len(live):
                    # A finished row leaves the batch: later steps compute live rows only.
                    index = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(index)
                    mask, position = mask[index], position[index]
                    live = [live[k] for k in keep]
                mask = torch.cat([mask, mask.new_ones(len(keep), 1)], dim=1)
                position = position + 1
                next_ids = torch.tensor([[tokens[k]] for k in keep], device=self.device)
                logits = self._forward(next_ids, mask, position, cache)
        samples = [self._to_sample(ids, config) for ids in generated]
        return [samples[k:k + n] for k in range(0, len(samples), n)]

    def forget_prompts(self) -> None:
        """Empty the prompt cache (between the timed searches, so neither reuses the other's)."""
        self._prompts.clear()

    def _prefill(self, batch: list[list[int]]
                 ) -> tuple[torch.Tensor, DynamicCache, torch.Tensor, torch.Tensor]:
        """(last logits, cache, attention mask, positions) of the left-padded prompts. Only the
        tokens past each prompt's longest cached prefix are computed: the rows' cached keys
        and values fill the first `width - new` positions, the last `new` are run."""
        input_ids, mask = self._left_pad(batch)
        position = (mask.cumsum(-1) - 1).clamp(min=0)
        width = input_ids.shape[1]
        prefixes = [self._cached_prefix(ids) for ids in batch]
        new = max(len(ids) - cached_length(prefix)
                  for ids, prefix in zip(batch, prefixes, strict=True))
        cache = DynamicCache(self._stack_prefixes(batch, prefixes, new))
        logits = self._forward(input_ids[:, width - new:], mask, position[:, width - new:], cache)
        for row, ids in enumerate(batch):
            self._prompts[tuple(ids)] = [(layer.keys[row, :, width - len(ids):],
                                          layer.values[row, :, width - len(ids):])
                                         for layer in cache.layers]
        return logits, cache, mask, position

    def _cached_prefix(self, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (keys, values) of the longest earlier prompt that `ids` extends (a leaf's
        prompt extends its parent's), [] when none; the last token is always run."""
        for length in range(len(ids) - 1, 0, -1):
            if (prefix := self._prompts.get(tuple(ids[:length]))) is not None:
                return prefix
        return []

    def _stack_prefixes(self, batch: list[list[int]],
                        prefixes: list[list[tuple[torch.Tensor, torch.Tensor]]],
                        new: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Per layer the cache of all but the last `new` (left-padded) positions: row i holds
        the keys and values of its first len(ids) - new tokens, zeros (masked) before them.
        None when no position is cached."""
        width = max(len(ids) for ids in batch) - new
        layers = next((prefix for prefix in prefixes if prefix), None)
        if width == 0 or layers is None:
            return None
        stacked = []
        for layer, (keys, values) in enumerate(layers):
            heads, _, dim = keys.shape
            shape = (len(batch), heads, width, dim)
            all_keys, all_values = keys.new_zeros(shape), values.new_zeros(shape)
            for row, (ids, prefix) in enumerate(zip(batch, prefixes, strict=True)):
                if (used := len(ids) - new) > 0:
                    all_keys[row, :, width - used:] = prefix[layer][0][:, :used]
                    all_values[row, :, width - used:] = prefix[layer][1][:, :used]
            stacked.append((all_keys, all_values))
        return stacked

    def _left_pad(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids and attention_mask, padded on the left: generation appends on the right."""
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([[self.pad_id] * (width - len(ids)) + ids for ids in batch])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
        return input_ids.to(self.device), mask.to(self.device)

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, position: torch.Tensor,
                 cache: DynamicCache) -> torch.Tensor:
        """The next-token logits of each row; `cache` grows by the new tokens."""
        output = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position,
                            cache=cache, use_cache=True, logits_to_keep=1)
        return output.logits[:, -1]

    def _running(self, live: list[int], generated: list[list[int]],
                 stops: Sequence[str]) -> list[int]:
        """Positions in `live` of the rows that neither ended with an EOS nor completed a stop
        string (their tails decoded in one batch)."""
        width = self.window + max((len(s) for s in stops), default=0)
        tails = decode_texts(self.tokenizer, [generated[row][-width:] for row in live])
        return [k for k, (row, tail) in enumerate(zip(live, tails, strict=True))
                if generated[row][-1] not in self.eos_ids and find_stop(tail, stops) is None]

    def _row_seed(self, ids: list[int], index: int) -> int:
        key = json.dumps([self.base_seed, ids, index]).encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % 2**63


def cached_length(prefix: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """The number of tokens whose per-layer (keys, values) `prefix` holds."""
    return prefix[0][0].shape[1] if prefix else 0


def inverse_cdf(logits: torch.Tensor, uniform: torch.Tensor, temperature: float) -> list[int]:
    """Per row the first token whose cumulative softmax(logits / T) exceeds the row's uniform
    draw: a draw from softmax(logits / T) that depends on that row alone (a token of
    probability 0 is never drawn: its cumulative value equals its predecessor's)."""
    cdf = torch.softmax(logits.float() / temperature, dim=-1).cumsum(dim=-1)
    draw = (uniform * cdf[:, -1]).unsqueeze(1)
    tokens = torch.searchsorted(cdf, draw, right=True).squeeze(1)
    return tokens.clamp(max=logits.shape[1] - 1).tolist()


def forget_prompts(generator: HFGenerator) -> None:
    """Start a search with no prompt cached, so that each mode prefills what it needs itself."""
    if isinstance(generator, PromptSeededHF):
        generator.forget_prompts()


def default_model() -> Path:
    """The embedded tiny model (built once per machine if missing)."""
    from restrl.toy.tiny_model import tiny_model_path

    return tiny_model_path()


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
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed (sequential, lockstep) pairs; each mode reports its fastest "
                             "run, since other load on a shared machine only slows a run")
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
        runs = {"sequential": run_mcts_sequential, "lockstep": run_mcts}
        seconds: dict[str, list[float]] = {mode: [] for mode in runs}
        outcomes = []
        for _ in range(args.repeats):
            for mode, search in runs.items():
                forget_prompts(generator)
                start = time.perf_counter()
                trees = search(problems, generator, tokenizer, verifier, config)
                seconds[mode].append(time.perf_counter() - start)
                outcomes.append((trees_to_tables(trees), search_budget(trees)))

    # Every search, in either mode, must have grown the same trees at the same cost.
    identical = all(outcome == outcomes[0] for outcome in outcomes)
    sequential_s, lockstep_s = min(seconds["sequential"]), min(seconds["lockstep"])
    budget = outcomes[0][1]
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
        "nodes": outcomes[0][0][0].num_rows,
        "completions": sum(completions for completions, _ in budget),
        "tokens": sum(tokens for _, tokens in budget),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "lockstep_runs_s": [round(t, 3) for t in seconds["lockstep"]],
        "sequential_runs_s": [round(t, 3) for t in seconds["sequential"]],
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
