"""DPO and SFT policy training on ReST data: TRL's `DPOTrainer` and `SFTTrainer`.

The ReST-RL seed trains these alternatives to ReST-GRPO with `models/train.py --mode dpo|sft`
(`dpo_utils.py`, `sft_utils.py`). Both read rows built by `restrl.rest` (REFERENCE.md section 3):

    DPO_DATA  prompt, chosen, rejected   the best and the worst sample of a problem
    SFT_DATA  prompt, completion         every sample with reward >= the threshold

`prompt` is the chat-formatted text ending in the reply prefix (the open code fence); `chosen`,
`rejected` and `completion` already end with their closing stop, and TRL appends the EOS token
after them, so the model learns to close its answer and end its turn. The loss covers the
completion tokens only (DPO by definition; SFT by `completion_only_loss`).

Both save the model and its tokenizer to `output_dir/final`, like `train_grpo`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from restrl.configs import config
from restrl.training.callbacks import forward_logs_callback
from restrl.training.checkpoints import train_and_save
from restrl.training.settings import TrainerSettings
from restrl.training.trainer_args import (
    checkpoint_dtype,
    load_dtype,
    shared_trainer_kwargs,
    truncate_prompts_left,
)

OnLog = Callable[[int, dict[str, float]], None]

DPO_COLUMNS = ("prompt", "chosen", "rejected")
SFT_COLUMNS = ("prompt", "completion")


@config
class DPOTrainConfig(TrainerSettings):
    """Everything DPO training reads. Defaults: the seed's `models/train.py` flags (it has no
    README example for DPO) and TRL 0.18.2's DPOConfig for what the seed leaves unset. The seed
    requires a DeepSpeed config for DPO; restrl does not."""

    # --- data ---
    max_prompt_length: int | None = Field(
        1024, description="Prompts are cut from the LEFT to this many tokens (TRL 0.18.2's "
        "`max_prompt_length`, which TRL 1.x no longer has); None keeps them whole.")
    max_length: int | None = Field(
        2048, description="Prompt + completion tokens kept (the seed's `--max_seq_length`); a "
        "longer pair loses the end of its completion. The seed also capped each completion at "
        "1024 tokens (`max_completion_length`); here a completion may use whatever max_length "
        "leaves after its prompt (at least 1024 by default).")
    shuffle_seed: int | None = Field(42, description="Rows shuffled with this seed first, as "
                                     "the seed does; None keeps their order.")

    # --- loss (TRL 0.18.2's defaults, which the seed used) ---
    beta: float = Field(0.1, description="Strength of the pull towards the reference model (the "
                        "starting policy, loaded a second time).")
    loss_type: str = Field("sigmoid", description="TRL's DPO loss; \"sigmoid\" is the DPO "
                           "paper's.")

    @classmethod
    def toy(cls) -> DPOTrainConfig:
        """The CPU demo's DPO on the tiny model (lr measured on the toy domain)."""
        return cls(learning_rate=5e-5, batch_size_per_device=8, save_steps=0, max_length=512)


@config
class SFTTrainConfig(TrainerSettings):
    """Everything SFT training reads. Defaults: the seed's `models/train.py` flags."""

    # --- data ---
    max_length: int | None = Field(2048, description="Prompt + completion tokens kept, the end "
                                   "cut (the seed's `--max_seq_length`).")
    max_prompt_length: int | None = Field(
        None, description="If set, prompts are cut from the LEFT to this many tokens first (the "
        "seed does not cut SFT prompts).")
    shuffle_seed: int | None = Field(42, description="Rows shuffled with this seed first, as "
                                     "the seed does; None keeps their order.")

    # --- loss ---
    completion_only_loss: bool = Field(
        True, description="The loss covers the completion tokens only. The seed meant the whole "
        "text (`prompt + completion` through a formatting function), which TRL 0.18.2 rejects "
        "for a dataset with a prompt column; False trains on it all.")

    @classmethod
    def toy(cls) -> SFTTrainConfig:
        """The CPU demo's SFT on the tiny model."""
        return cls(learning_rate=5e-5, batch_size_per_device=8, save_steps=0, max_length=512)


@dataclass
class PolicyTrainResult:
    """Where the trained policy is (`output_dir/final`) and what training logged."""

    model_dir: Path
    rows_used: int
    prompts_truncated: int
    log_history: list[dict[str, Any]]


def preference_dataset(rows: Sequence[Mapping[str, Any]] | Any, columns: Sequence[str],
                       tokenizer: Any, max_prompt_length: int | None,
                       shuffle_seed: int | None) -> tuple[Any, int]:
    """A `datasets.Dataset` of `columns` from rows (dicts or a pyarrow Table), prompts cut from
    the left to max_prompt_length tokens, shuffled; and how many prompts were cut."""
    from datasets import Dataset

    if hasattr(rows, "to_pylist"):
        rows = rows.to_pylist()
    if not rows:
        raise ValueError("no rows to train on")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise ValueError(f"training rows lack the columns {missing}")
    rows = [{c: r[c] for c in columns} for r in rows]
    cut = 0
    if max_prompt_length is not None:
        rows, cut = truncate_prompts_left(rows, tokenizer, max_prompt_length)
    dataset = Dataset.from_list(rows)
    return (dataset.shuffle(seed=shuffle_seed) if shuffle_seed is not None else dataset), cut


def _common_args(config: DPOTrainConfig | SFTTrainConfig, output_dir: Path,
                 model_path: str) -> dict[str, Any]:
    return {
        **shared_trainer_kwargs(config, output_dir, checkpoint_dtype(model_path)),
        "max_length": config.max_length,
        "model_init_kwargs": {"dtype": load_dtype(config.deepspeed_config)},
        "disable_tqdm": False,
    }


def _tokenizer(model_path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def train_dpo(model_path: str, rows: Sequence[Mapping[str, Any]] | Any, config: DPOTrainConfig,
              output_dir: str | Path, on_log: OnLog | None = None) -> PolicyTrainResult:
    """DPO from the policy at `model_path` (also the frozen reference) on DPO_DATA rows."""
    from trl import DPOConfig, DPOTrainer

    output_dir = Path(output_dir)
    args = DPOConfig(**_common_args(config, output_dir, model_path), beta=config.beta,
                     loss_type=[config.loss_type])
    tokenizer = _tokenizer(model_path)
    dataset, cut = preference_dataset(rows, DPO_COLUMNS, tokenizer, config.max_prompt_length,
                                      config.shuffle_seed)
    trainer = DPOTrainer(model=str(model_path), args=args, train_dataset=dataset,
                         processing_class=tokenizer, callbacks=[forward_logs_callback(on_log)])
    final = train_and_save(trainer, tokenizer, "DPO", output_dir)
    return PolicyTrainResult(final, len(dataset), cut, trainer.state.log_history)


def train_sft(model_path: str, rows: Sequence[Mapping[str, Any]] | Any, config: SFTTrainConfig,
              output_dir: str | Path, on_log: OnLog | None = None) -> PolicyTrainResult:
    """Supervised fine-tuning of the policy at `model_path` on SFT_DATA rows."""
    from trl import SFTConfig, SFTTrainer

    output_dir = Path(output_dir)
    args = SFTConfig(**_common_args(config, output_dir, model_path),
                     completion_only_loss=config.completion_only_loss, packing=False)
    tokenizer = _tokenizer(model_path)
    dataset, cut = preference_dataset(rows, SFT_COLUMNS, tokenizer, config.max_prompt_length,
                                      config.shuffle_seed)
    trainer = SFTTrainer(model=str(model_path), args=args, train_dataset=dataset,
                         processing_class=tokenizer, callbacks=[forward_logs_callback(on_log)])
    final = train_and_save(trainer, tokenizer, "SFT", output_dir)
    return PolicyTrainResult(final, len(dataset), cut, trainer.state.log_history)
