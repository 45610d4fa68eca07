"""The Trainer arguments GRPO and value-model training share, read from their configs.

Both configs name these fields the same way (learning_rate, epochs, max_steps, save_steps,
batch_size_per_device, gradient_accumulation_steps, deepspeed_config, logging_steps, seed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def shared_trainer_kwargs(config: Any, output_dir: Path) -> dict[str, Any]:
    """Keyword arguments for `TrainingArguments` / `GRPOConfig`; CPU or GPU picked here."""
    import torch

    on_gpu = torch.cuda.is_available()
    return {
        "output_dir": str(output_dir / "checkpoints"),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.batch_size_per_device,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "deepspeed": config.deepspeed_config,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps" if config.save_steps else "no",
        "save_steps": config.save_steps or 500,
        "seed": config.seed,
        "use_cpu": not on_gpu,
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
        "report_to": [],
        "dataloader_num_workers": 0,
    }
