"""TRL's `GRPOTrainer` with a prompt order that a resumed run reproduces.

TRL's `RepeatSampler` draws each epoch's prompt order from one `torch.Generator`, seeded once
when the trainer is built: epoch e trains on the generator's (e+1)-th permutation. A run resumed
in epoch e >= 1 builds a fresh generator and replays epoch 0's order, so it trains on other
prompts than the uninterrupted run and ends with other weights (measured on the tiny model:
equal weights when resumed inside epoch 0, different ones from epoch 1 on). `EpochReplay`
restarts the generator at each epoch (the Trainer calls `set_epoch`) and draws the e earlier
permutations again: TRL's own orders, in an uninterrupted run and in a resumed one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler
from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler


class EpochReplay(Sampler):
    """TRL's `RepeatSampler`, its shuffle at epoch e a function of (seed, e) alone."""

    def __init__(self, sampler: RepeatSampler) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[int]:
        inner = self.sampler
        if inner.shuffle and inner.seed is not None:
            inner.generator.manual_seed(inner.seed)
            for _ in range(self.epoch):  # the orders of the epochs before this one
                torch.randperm(inner.num_samples, generator=inner.generator)
        return iter(inner)


class ResumableGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` whose training prompts come in the same order after a resume."""

    def _get_train_sampler(self, dataset: Any = None) -> Sampler:
        return EpochReplay(super()._get_train_sampler(dataset))
