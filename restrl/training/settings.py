"""The Trainer settings every restrl trainer (GRPO, DPO, SFT, value model) reads alike.

`TrainerSettings` holds them once, with their help; each trainer's config inherits it. Where a
trainer's original default differs, its config re-states that one field with `retuned`, which
keeps the shared help (and constraints) and appends why this trainer's default is what it is::

    @config
    class GRPOTrainConfig(TrainerSettings):
        learning_rate: float = retuned("learning_rate", 1e-7, "The README example's value ...")
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo

from restrl.configs import config


@config
class TrainerSettings:
    """Optimisation, checkpoint and hardware settings shared by every restrl trainer. Defaults:
    the seed's `models/train.py` flags (lr 2e-5, batch 4, 1 epoch, save_steps 0.5), and
    TrainingArguments' for what it leaves unset."""

    # --- optimisation ---
    learning_rate: float = Field(2e-5, gt=0, description="Peak learning rate of AdamW (linear "
                                 "decay to 0, the Trainer's schedule).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    epochs: float = Field(1.0, description="Passes over the training rows.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps; -1 runs the "
                           "epochs.")
    batch_size_per_device: int = Field(4, ge=1, description="Rows per device in one "
                                       "micro-batch.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer "
                                             "step.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, more "
        "compute. Off as in TRL 0.18.2 and the seed (TRL 1.x turns it on).")

    # --- checkpoints and logs ---
    save_steps: float = Field(
        0.5, ge=0, description="Checkpoint to <output_dir>/checkpoints every this many steps, or "
        "this fraction of the run if < 1; 0 saves only the final model. A rerun resumes from the "
        "newest complete checkpoint (weights, optimizer, scheduler, RNG state).")
    logging_steps: int = Field(1, ge=1, description="Log (and forward to MLflow) every this many "
                               "steps.")
    seed: int = Field(42, description="The Trainer's seed (data order, dropout, sampling); 42 "
                      "is TrainingArguments' default, which the ReST-RL seed kept.")

    # --- hardware ---
    deepspeed_config: str | None = Field(
        None, description="Path of a DeepSpeed JSON (ZeRO-2/3 configs ship in "
        "restrl/training/configs), used under `accelerate launch` / `deepspeed`. With it the "
        "model trains in its checkpoint's dtype and DeepSpeed keeps fp32 master weights; without "
        "it the weights are fp32 and a GPU autocasts to the checkpoint's half dtype.")


def retuned(name: str, default: Any, why: str) -> Any:
    """`TrainerSettings.<name>` with another default: its help (and constraints) kept and `why`
    appended, for a config whose trainer's original default differs."""
    shared = TrainerSettings.__pydantic_fields__[name]
    return FieldInfo.merge_field_infos(shared, default=default,
                                       description=f"{shared.description} {why}")
