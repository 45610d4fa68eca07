"""Step: value model. Train it on `value_data`; a `value_model` artifact."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from restrl.artifacts import ArtifactRef, ArtifactStore
from restrl.artifacts.step import Built, RunIds, Step, params_of, run_step
from restrl.steps.models import model_identity, resolve_model
from restrl.value.config import ValueModelConfig

OnLog = Callable[[int, dict[str, float]], None]


def train_value(store: ArtifactStore, base_model: str, data_ref: ArtifactRef,
                config: ValueModelConfig, work_dir: str | Path, run_ids: RunIds | None = None,
                on_log: OnLog | None = None) -> tuple[ArtifactRef, dict[str, float]]:
    """The `value_model` artifact and its held-out metrics; training resumes from its last
    checkpoint in `work_dir/<key>`."""
    from restrl.value.train import train_value_model

    model_path, model_ref = resolve_model(store, base_model)
    parents = (data_ref,) + ((model_ref,) if model_ref else ())
    step = Step("value_model", params_of(config, **model_identity(store, base_model)), parents)

    def build() -> Built:
        result = train_value_model(model_path, store.read_table(data_ref), config,
                                   Path(work_dir) / step.key, on_log=on_log)
        metrics = {k: float(v) for k, v in result.metrics.items()}
        return Built(model_dir=result.model_dir, extra={
            "metrics": metrics, "base_model": base_model, "n_train": result.n_train,
            "n_eval": result.n_eval})

    ref, extra = run_step(store, step, build, run_ids)
    return ref, extra.get("metrics", {})
