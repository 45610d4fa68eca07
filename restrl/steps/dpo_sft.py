"""Step: DPO or SFT. Train the policy on `dpo_data` / `sft_data` from the same samples."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from restrl.artifacts import ArtifactRef, ArtifactStore
from restrl.artifacts.step import Built, RunIds, Step, params_of, run_step
from restrl.steps.models import model_identity, resolve_model
from restrl.training.preference import DPOTrainConfig, SFTTrainConfig

OnLog = Callable[[int, dict[str, float]], None]
MODES = ("dpo", "sft")


def train_preference(store: ArtifactStore, mode: str, model: str, data_ref: ArtifactRef,
                     config: DPOTrainConfig | SFTTrainConfig, work_dir: str | Path,
                     run_ids: RunIds | None = None, on_log: OnLog | None = None
                     ) -> tuple[ArtifactRef, dict[str, Any]]:
    """The `policy` artifact; training resumes from its last checkpoint in `work_dir/<key>`."""
    from restrl.training import preference

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    train = {"dpo": preference.train_dpo, "sft": preference.train_sft}[mode]
    model_path, model_ref = resolve_model(store, model)
    parents = (data_ref,) + ((model_ref,) if model_ref else ())
    step = Step("policy", params_of(config, mode=mode, **model_identity(store, model)), parents)

    def build() -> Built:
        rows = store.read_table(data_ref).to_pylist()
        result = train(model_path, rows, config, Path(work_dir) / step.key, on_log=on_log)
        return Built(model_dir=result.model_dir, extra={
            "rows_used": result.rows_used, "prompts_truncated": result.prompts_truncated,
            "base_model": model, "mode": mode})

    return run_step(store, step, build, run_ids)
