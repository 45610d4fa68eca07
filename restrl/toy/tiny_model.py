"""The embedded tiny model: a local tokenizer and a small Qwen2 LM, warm-started on toy tasks.

`tiny_model_path()` returns a directory that loads like any hub model
(`AutoTokenizer.from_pretrained(path)`, `AutoModelForCausalLM.from_pretrained(path)`), building
it once per machine (cache keyed by the recipe) under a file lock. The build:

1. trains a byte-level BPE tokenizer (`restrl.toy.tiny_tokenizer`) on the toy train corpus plus
   a bounded, deterministic slice of the local Python standard library, with a ChatML template;
2. creates a small `Qwen2ForCausalLM`;
3. warm-starts it by supervised training on toy train-split reference solutions (loss on the
   reply only), and stops as soon as its greedy pass@1 on held-out *calibration* combinations
   (train-split combinations kept out of the SFT data) reaches `target_pass`, so that the base
   policy is clearly above zero and clearly below one and RL has room to improve it;
4. measures pass@1 on the toy test split (greedy, and sampled at temperature 0.7) with the
   sandbox verifier and writes it, with the recipe, to `restrl_tiny.json`.

pass@1 is measured as the pipeline measures it: samples drawn by `restrl.sampling` through the
transformers generator (`restrl.generation.hf`), judged by `restrl.sandbox`, scored by
`restrl.evaluation.pass_at_1`. Greedy pass@1 on the calibration problems decides when to stop.

Training runs on one torch thread by default: on a small shared machine the model's tiny matmuls
are faster single-threaded (measured: 0.4 s/step vs 2.3 s/step with 2 threads under load), and a
fixed thread count keeps the build bit-reproducible for a seed.

torch / transformers / tokenizers are imported inside functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from restrl.problems.model import Problem, index_problems
from restrl.toy.tasks import (
    combo_key,
    families_fingerprint,
    reference_body,
    stable_hash,
    toy_problems,
)
from restrl.toy.tiny_tokenizer import CHAT_TEMPLATE, IM_END, IM_START, build_tokenizer, stdlib_texts

RECIPE_VERSION = 3  # 3: train no longer holds the validation split's combinations
INFO_FILE = "restrl_tiny.json"

REPLY_END = "```"  # a reply ends with the closing fence, then eos

# The recipe: everything that decides the built model. Its hash names the cache directory.
RECIPE: dict[str, Any] = {
    "version": RECIPE_VERSION,
    "tokenizer": {"kind": "qwen2-bytelevel-bpe", "vocab_size": 1024, "min_frequency": 2,
                  "stdlib_bytes": 1_000_000},
    "model": {
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
    },
    "train": {
        "n_train": 3000,  # toy train problems (families in turn), minus calibration combos
        "calib_fraction": 0.15,  # of train combinations, held out of SFT to decide when to stop
        "n_calib": 60,
        "batch_size": 32,
        "lr": 3e-3,
        "weight_decay": 0.01,
        "warmup_steps": 30,
        "max_steps": 800,
        "eval_every": 25,
        "min_steps": 150,
        "target_pass": 0.3,  # stop at the first calibration greedy pass@1 >= this
    },
    # Final measurement on the test split, families in turn (10 problems per family).
    "eval": {"n_test": 150, "temperature": 0.7, "samples": 2, "max_new_tokens": 128},
}


# ----------------------------------------------------------------------------- paths and cache


def recipe_hash(recipe: dict[str, Any] | None = None, seed: int = 0) -> str:
    """Hash of the recipe, the toy families, the seed and the stdlib version used for text."""
    key = {
        "recipe": recipe or RECIPE,
        "families": families_fingerprint(),
        "seed": seed,
        "python": list(sys.version_info[:2]),
        "transformers": _version("transformers").split(".")[0],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def default_cache_root() -> Path:
    """`$RESTRL_CACHE`, else `~/.cache/restrl`."""
    env = os.environ.get("RESTRL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "restrl"


def is_complete(path: Path) -> bool:
    """A built model directory has its info file, written last."""
    return (Path(path) / INFO_FILE).is_file()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tiny_model_path(cache_dir: str | Path | None = None, *, seed: int = 0,
                    progress: bool = True) -> Path:
    """The cached tiny model directory `<cache>/tiny-model/<recipe-hash>`, built if missing.

    `cache_dir` defaults to `default_cache_root()`. Concurrent callers (test workers, flows)
    serialise on a file lock, so the model is built once; the build happens in a temporary
    directory renamed into place, so an interrupted build never looks complete.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    parent = root / "tiny-model"
    name = recipe_hash(seed=seed)
    path = parent / name
    if is_complete(path):
        return path
    with _file_lock(parent / f".{name}.lock"):
        if not is_complete(path):  # another process may have built it meanwhile
            for stale in parent.glob(f".{name}.building-*"):  # left by a killed build
                shutil.rmtree(stale, ignore_errors=True)
            build_tiny_model(path, seed=seed, progress=progress)
    return path


# ----------------------------------------------------------------------------- SFT text


class _TemplateOnly:
    """Stands in for a tokenizer when rendering the chat template before one exists."""

    chat_template = CHAT_TEMPLATE

    def apply_chat_template(self, conversation: Any, tokenize: bool = False,
                            add_generation_prompt: bool = False, **kwargs: Any) -> str:
        text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in conversation)
        return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def sft_text(problem: Problem, tokenizer: Any = None) -> tuple[str, str]:
    """(prompt, completion) of one SFT example: the formatted prompt (its reply prefix holds
    init_code) and the reference body + closing fence (eos is appended as a token)."""
    from restrl.prompts import format_prompt

    return format_prompt(problem, tokenizer or _TemplateOnly()), reference_body(problem) + REPLY_END


# ----------------------------------------------------------------------------- generation / eval


def generate_programs(model: Any, tokenizer: Any, problems: Sequence[Problem], *,
                      temperature: float = 0.0, samples: int = 1, max_new_tokens: int = 128,
                      batch_size: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """Completions rows (`restrl.sampling.sample_problems`), `samples` per problem, from the
    model being built, through restrl's transformers generator; temperature 0 is greedy.
    `batch_size` is sequences per batch (a generator batch counts prompts of `samples` rows)."""
    from restrl.generation.hf import HFGenerator
    from restrl.sampling import SamplingConfig, sample_problems

    # One generate call for all problems: the generator sorts them by length, so batches pad
    # little.
    config = SamplingConfig(n=samples, temperature=temperature, max_tokens=max_new_tokens,
                            seed=seed, problems_per_call=max(1, len(problems)))
    was_training = model.training
    try:
        generator = HFGenerator(model, tokenizer=tokenizer,
                                batch_size=max(1, batch_size // samples))  # sets eval mode
        return sample_problems(problems, generator, tokenizer, config)
    finally:
        model.train(was_training)


def evaluate_pass_at_1(model: Any, tokenizer: Any, problems: Sequence[Problem], *,
                       temperature: float = 0.0, samples: int = 1, max_new_tokens: int = 128,
                       seed: int = 0, verifier: Any = None) -> float:
    """pass@1 (`restrl.evaluation.pass_at_1`) of `samples` samples per problem, judged by the
    sandbox: greedy when temperature is 0, else the unbiased estimate from the samples."""
    from restrl.evaluation import pass_at_1
    from restrl.sandbox import Verifier

    rows = generate_programs(model, tokenizer, problems, temperature=temperature,
                             samples=samples, max_new_tokens=max_new_tokens, seed=seed)
    by_key = index_problems(problems)
    judged = [by_key[(row["domain"], row["problem_id"])] for row in rows]
    programs = [row["program"] for row in rows]
    with contextlib.ExitStack() as stack:
        judge = verifier or stack.enter_context(Verifier(domains=["toy"]))
        verdicts = judge.verify(judged, programs)
    return pass_at_1([{**row, "strict": v.strict} for row, v in zip(rows, verdicts, strict=True)])


# ----------------------------------------------------------------------------- build


def _split_calibration(problems: list[Problem], fraction: float) -> tuple[list[Problem],
                                                                            list[Problem]]:
    """(sft, calibration): calibration = problems whose combination hashes into `fraction`."""
    sft, calib = [], []
    for p in problems:
        key = combo_key(p.meta["family"], p.meta["constants"])
        (calib if stable_hash(key, "calib") % 10_000 < fraction * 10_000 else sft).append(p)
    return sft, calib


def _one_per_combo(problems: list[Problem], limit: int) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        key = combo_key(p.meta["family"], p.meta["constants"])
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out[:limit]


def _encode(tokenizer: Any, problems: Sequence[Problem]) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per problem; prompt and completion are tokenised apart, as at
    generation time, so no BPE merge crosses the boundary."""
    examples = []
    for p in problems:
        prompt, completion = sft_text(p, tokenizer)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        examples.append((prompt_ids + completion_ids + [tokenizer.eos_token_id], len(prompt_ids)))
    return examples


def _batch(examples: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(examples):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention[row, :len(ids)] = 1
        labels[row, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="tiny model", unit="step", disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)


def build_tiny_model(out_dir: str | Path, *, seed: int = 0, steps: int | None = None,
                     progress: bool = True, evaluate: bool = True,
                     recipe: dict[str, Any] | None = None, threads: int = 1) -> Path:
    """Build the tiny model into `out_dir` (tokenizer, model, `restrl_tiny.json`); returns it.

    `steps` fixes the number of SFT steps (no early stop); by default training stops at the first
    calibration check with greedy pass@1 >= target_pass (or at max_steps). `evaluate` measures
    pass@1 on the toy test split afterwards; `threads` is torch's thread count while building.
    The directory appears whole or not at all; an existing tiny model there is replaced, any
    other non-empty directory is an error.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not is_complete(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not a tiny model directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        _build_into(tmp, seed=seed, steps=steps, progress=progress, evaluate=evaluate,
                    recipe=recipe or RECIPE, threads=threads)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _build_into(out: Path, *, seed: int, steps: int | None, progress: bool, evaluate: bool,
                recipe: dict[str, Any], threads: int) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    started = time.monotonic()
    tok_cfg, model_cfg, train_cfg = recipe["tokenizer"], recipe["model"], recipe["train"]
    random.seed(seed)
    torch.manual_seed(seed)

    # Data: train problems (families in turn), split into SFT and calibration combinations.
    train = toy_problems("train", train_cfg["n_train"], seed=seed)
    sft, calib = _split_calibration(train, train_cfg["calib_fraction"])
    calib = _one_per_combo(calib, train_cfg["n_calib"])

    # Tokenizer: the SFT texts (every train combination once) plus stdlib sources.
    corpus = ["".join(sft_text(p)) for p in toy_problems("train", None, seed=seed)]
    tokenizer = build_tokenizer(corpus + stdlib_texts(tok_cfg["stdlib_bytes"]),
                                vocab_size=tok_cfg["vocab_size"],
                                min_frequency=tok_cfg["min_frequency"],
                                model_max_length=model_cfg["max_position_embeddings"])
    examples = _encode(tokenizer, sft)

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        use_cache=True,
        **model_cfg,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None, max_new_tokens=recipe["eval"]["max_new_tokens"],
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg["lr"],
                                  weight_decay=train_cfg["weight_decay"], betas=(0.9, 0.98))
    warmup = train_cfg["warmup_steps"]
    max_steps = steps if steps is not None else train_cfg["max_steps"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup))
    order = random.Random(seed)
    batch_size = train_cfg["batch_size"]

    from restrl.sandbox import Verifier

    history: list[dict[str, Any]] = []
    stopped_early = False
    step = 0
    with _torch_threads(threads), Verifier(domains=["toy"]) as verifier, \
            _progress_bar(max_steps, progress) as bar:
        model.train()
        indices: list[int] = []
        loss_avg = None
        while step < max_steps:
            if len(indices) < batch_size:
                fresh = list(range(len(examples)))
                order.shuffle(fresh)
                indices += fresh
            chosen, indices = indices[:batch_size], indices[batch_size:]
            loss = model(**_batch([examples[i] for i in chosen], tokenizer.pad_token_id)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            value = loss.item()
            loss_avg = value if loss_avg is None else 0.9 * loss_avg + 0.1 * value
            bar.update(1)
            bar.set_postfix(loss=f"{loss_avg:.3f}", calib=history[-1]["calib_pass"]
                            if history else "-")
            check = (steps is None and step >= train_cfg["min_steps"]
                     and step % train_cfg["eval_every"] == 0)
            if check:
                rate = evaluate_pass_at_1(model, tokenizer, calib, seed=seed, verifier=verifier,
                                          max_new_tokens=recipe["eval"]["max_new_tokens"])
                history.append({"step": step, "loss": round(loss_avg, 4),
                                "calib_pass": round(rate, 3)})
                bar.set_postfix(loss=f"{loss_avg:.3f}", calib=f"{rate:.2f}")
                if rate >= train_cfg["target_pass"]:
                    stopped_early = True
                    break
        train_seconds = time.monotonic() - started

        test_stats: dict[str, Any] = {}
        if evaluate:
            bar.set_description("tiny model: test pass@1")
            eval_cfg = recipe["eval"]
            test = toy_problems("test", eval_cfg["n_test"], seed=seed)
            greedy = evaluate_pass_at_1(model, tokenizer, test, seed=seed, verifier=verifier,
                                        max_new_tokens=eval_cfg["max_new_tokens"])
            sampled = evaluate_pass_at_1(model, tokenizer, test, seed=seed, verifier=verifier,
                                         temperature=eval_cfg["temperature"],
                                         samples=eval_cfg["samples"],
                                         max_new_tokens=eval_cfg["max_new_tokens"])
            test_stats = {
                "n_problems": len(test),
                "greedy_pass_at_1": round(greedy, 4),
                "sampled_pass_at_1": round(sampled, 4),
                "temperature": eval_cfg["temperature"],
                "samples_per_problem": eval_cfg["samples"],
            }

    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {
        "recipe": recipe,
        "recipe_hash": recipe_hash(recipe, seed),
        "seed": seed,
        "steps": step,
        "stopped_early": stopped_early,
        "n_sft_examples": len(examples),
        "n_calib": len(calib),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "final_loss": round(loss_avg, 4) if loss_avg is not None else None,
        "calibration": history,
        "test": test_stats,
        "train_seconds": round(train_seconds, 1),
        "build_seconds": round(time.monotonic() - started, 1),
        "threads": threads,
        "versions": {"torch": torch.__version__, "transformers": _version("transformers"),
                     "python": sys.version.split()[0]},
    }
    # Written last: its presence marks a complete build.
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


def _version(package: str) -> str:
    from importlib.metadata import version

    try:
        return version(package)
    except Exception:  # pragma: no cover - metadata missing
        return "unknown"


def tiny_model_info(path: str | Path) -> dict[str, Any]:
    """The recipe and measured stats a build wrote (`restrl_tiny.json`)."""
    return json.loads((Path(path) / INFO_FILE).read_text())
