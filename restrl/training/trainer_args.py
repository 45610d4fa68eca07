"""What every restrl trainer (GRPO, DPO, SFT, value model) sets the same way on the Trainer.

Every training config inherits `TrainerSettings`; `shared_trainer_kwargs` turns those settings
into `TrainingArguments` / TRL config keyword arguments and decides CPU vs GPU and mixed
precision. The other helpers answer the questions each trainer asks at its start: how
many processes train (`num_processes`), which dtype the weights load in (`load_dtype`), and how
to switch activation checkpointing on in this transformers version (`checkpointing_kwargs`),
and how long prompts are cut (`truncate_prompts_left`: from the left, never dropped).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from restrl.training.checkpoints import checkpoints_dir
from restrl.training.settings import TrainerSettings

log = logging.getLogger("restrl.training")

def shared_trainer_kwargs(settings: TrainerSettings, output_dir: Path,
                          model_dtype: str | None = None) -> dict[str, Any]:
    """Keyword arguments for `TrainingArguments` / a TRL config from the shared settings.

    Checkpoints go to `output_dir/checkpoints`; `save_steps` 0 saves none (only the caller's
    final model). On a GPU, mixed precision follows `model_dtype` (the checkpoint's dtype, as
    the ReST-RL seed sets bf16/fp16 from `model_config.torch_dtype`) when it is given, else bf16
    where the GPU supports it. On the CPU training runs in fp32 (`use_cpu`).
    """
    import torch

    on_gpu = torch.cuda.is_available()
    if settings.deepspeed_config and not on_gpu:
        init_deepspeed_on_cpu()
    if model_dtype is None:
        bf16, fp16 = on_gpu and torch.cuda.is_bf16_supported(), False
    else:
        bf16, fp16 = on_gpu and model_dtype == "bfloat16", on_gpu and model_dtype == "float16"
    return {
        "learning_rate": settings.learning_rate,
        "weight_decay": settings.weight_decay,
        "num_train_epochs": settings.epochs,
        "max_steps": settings.max_steps,
        "per_device_train_batch_size": settings.batch_size_per_device,
        "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        **checkpointing_kwargs(settings.gradient_checkpointing),
        "output_dir": str(checkpoints_dir(output_dir)),
        "save_strategy": "steps" if settings.save_steps else "no",
        "save_steps": settings.save_steps or 500,
        "logging_steps": settings.logging_steps,
        "seed": settings.seed,
        "deepspeed": settings.deepspeed_config,
        "use_cpu": not on_gpu,
        "bf16": bf16,
        "fp16": fp16,
        "report_to": [],
        "dataloader_num_workers": 0,
    }


def init_deepspeed_on_cpu() -> None:
    """Start DeepSpeed's process group (gloo) in a distributed CPU run, before any model loads.

    On a GPU accelerate does this when the TrainingArguments set up their device; with
    `use_cpu` it does not, and ZeRO-3's partitioned loading (`deepspeed.zero.Init` inside
    `from_pretrained`) then counts one process and stops with "train_batch_size is not equal
    to micro_batch_per_gpu * gradient_acc_step * world_size 2 != 1 * 1 * 1". A single process
    needs nothing.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import deepspeed

    if not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)


def checkpointing_kwargs(enabled: bool) -> dict[str, bool]:
    """Activation (gradient) checkpointing on or off, under the name this transformers uses.

    Always explicit: TRL 1.x configs default it to True, TrainingArguments (and TRL 0.18.2,
    the seed's version) to False.
    """
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    name = "activation_checkpointing" if "activation_checkpointing" in names \
        else "gradient_checkpointing"
    return {name: enabled}


def num_processes() -> int:
    """Training processes: `WORLD_SIZE` (set by `accelerate launch`, `torchrun`, `deepspeed`),
    else accelerate's state when something set it up, else 1."""
    if os.environ.get("WORLD_SIZE"):
        return int(os.environ["WORLD_SIZE"])
    from accelerate.state import PartialState

    if PartialState._shared_state:  # initialised: read it, do not create it here
        return int(PartialState().num_processes)
    return 1


def checkpoint_dtype(model_path: str | Path) -> str | None:
    """The dtype a checkpoint is stored in ("bfloat16", "float32", ...), from its config.json."""
    path = Path(model_path, "config.json")
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    dtype = config.get("dtype") or config.get("torch_dtype")
    return str(dtype).removeprefix("torch.") if dtype else None


def load_dtype(deepspeed_config: str | None) -> str:
    """The dtype to load the trained weights in.

    Under DeepSpeed the checkpoint's own dtype ("auto"): DeepSpeed keeps fp32 master weights
    itself, as in the seed. Without DeepSpeed float32, and the Trainer autocasts to the
    checkpoint's half dtype: AdamW steps on bf16 weights would round away updates at the seed's
    learning rates (1e-7 .. 2e-5).
    """
    return "auto" if deepspeed_config else "float32"


def keep_last_tokens(text: str, tokenizer: Any, max_tokens: int) -> tuple[str, bool]:
    """`text` cut from the left to its last `max_tokens` tokens (no special tokens added), and
    whether it was cut. The cut is decoded back to text, re-checked, and cut further if the
    re-tokenized tail came out longer."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text, False
    keep = max_tokens
    while keep > 0:
        tail = tokenizer.decode(ids[-keep:], skip_special_tokens=False)
        if len(tokenizer(tail, add_special_tokens=False)["input_ids"]) <= max_tokens:
            return tail, True
        keep -= 1
    return "", True


def truncate_prompts_left(rows: Sequence[Mapping[str, Any]], tokenizer: Any,
                          max_prompt_length: int) -> tuple[list[dict[str, Any]], int]:
    """Rows with each prompt cut to its last max_prompt_length tokens, and how many were cut.

    Left truncation keeps the end of the prompt: the reply prefix and the code so far, which
    the continuation must follow. No row is dropped.
    """
    out, cut = [], 0
    for row in rows:
        prompt, was_cut = keep_last_tokens(row["prompt"], tokenizer, max_prompt_length)
        cut += was_cut
        out.append({**row, "prompt": prompt})
    if cut:
        log.warning("cut %d of %d prompts longer than %d tokens from the left",
                    cut, len(rows), max_prompt_length)
    return out, cut
