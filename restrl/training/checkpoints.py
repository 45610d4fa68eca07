"""Resuming a trainer from its newest complete checkpoint, and saving its final model.

Every restrl trainer checkpoints to `<output_dir>/checkpoints/checkpoint-N` (when `save_steps`
> 0). A rerun in the same output directory passes the newest complete one to `trainer.train`,
so the Trainer restores the weights, optimizer, scheduler and RNG states and skips the batches
already seen: the run ends where an uninterrupted one would.

The Trainer writes a checkpoint in order: weights, optimizer and scheduler, each process's RNG
state, and `trainer_state.json` last (rank 0). A process killed mid-write leaves a directory
without a readable `trainer_state.json` (or without some rank's RNG state): it is skipped with
a warning, and the previous checkpoint is used.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from restrl.training.callbacks import quiet_progress

log = logging.getLogger("restrl.training")

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")  # transformers' PREFIX_CHECKPOINT_DIR-step


def checkpoints_dir(output_dir: str | Path) -> Path:
    """Where a trainer writing to `output_dir` keeps its checkpoints."""
    return Path(output_dir) / "checkpoints"


def checkpoint_step(path: Path) -> int | None:
    """N of a `checkpoint-N` directory, None for anything else."""
    match = CHECKPOINT_DIR.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def missing_parts(checkpoint: Path, step: int, processes: int) -> list[str]:
    """What the checkpoint of `step`, written by `processes` processes, lacks to be resumed
    from; [] when it is complete."""
    missing = []
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        if state.get("global_step") != step:
            missing.append(f"trainer_state.json at step {step}")
    except (OSError, ValueError):
        missing.append("a readable trainer_state.json")
    rng_files = (["rng_state.pth"] if processes == 1
                 else [f"rng_state_{rank}.pth" for rank in range(processes)])
    missing += [name for name in rng_files if not (checkpoint / name).is_file()]
    return missing


def last_complete_checkpoint(output_dir: str | Path, processes: int) -> Path | None:
    """The complete checkpoint with the highest step under `output_dir/checkpoints`; newer,
    incomplete ones are skipped with a warning."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return None
    steps = {path: step for path in root.iterdir() if (step := checkpoint_step(path)) is not None}
    for checkpoint in sorted(steps, key=steps.__getitem__, reverse=True):
        missing = missing_parts(checkpoint, steps[checkpoint], processes)
        if not missing:
            return checkpoint
        log.warning("skipping the incomplete checkpoint %s (it lacks %s)", checkpoint,
                    ", ".join(missing))
    return None


def resume_checkpoint(trainer_name: str, output_dir: str | Path, processes: int) -> str | None:
    """The checkpoint `trainer.train(resume_from_checkpoint=...)` should continue from (None:
    start over), logged as "resuming <trainer_name> from step N (<path>)"."""
    checkpoint = last_complete_checkpoint(output_dir, processes)
    if checkpoint is None:
        return None
    log.info("resuming %s from step %d (%s)", trainer_name, checkpoint_step(checkpoint),
             checkpoint)
    return str(checkpoint)


def train_and_save(trainer: Any, tokenizer: Any, trainer_name: str,
                   output_dir: str | Path) -> Path:
    """Train (from the last complete checkpoint, if any) and save the model and its tokenizer
    to `output_dir/final`."""
    quiet_progress(trainer)
    trainer.train(resume_from_checkpoint=resume_checkpoint(trainer_name, output_dir,
                                                           trainer.args.world_size))
    final = Path(output_dir) / "final"
    trainer.save_model(str(final))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(final))
    return final
