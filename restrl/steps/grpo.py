"""Step: ReST-GRPO. Train the policy on `grpo_data`, rewarded in the sandbox; a `policy`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from restrl.artifacts import ArtifactRef, ArtifactStore
from restrl.artifacts.step import Built, RunIds, Step, params_of, run_step
from restrl.problems.model import index_problems
from restrl.steps.models import model_identity, resolve_model
from restrl.steps.problems import read_problems
from restrl.steps.verify import VerifyConfig
from restrl.training.grpo import GRPOTrainConfig

OnLog = Callable[[int, dict[str, float]], None]


def train_grpo(store: ArtifactStore, model: str, data_ref: ArtifactRef,
               problems_refs: Sequence[ArtifactRef], config: GRPOTrainConfig,
               verify_config: VerifyConfig, work_dir: str | Path,
               run_ids: RunIds | None = None, on_log: OnLog | None = None
               ) -> tuple[ArtifactRef, dict[str, Any]]:
    """The `policy` artifact; training resumes from its last checkpoint in `work_dir/<key>`."""
    from restrl.training.grpo import train_grpo as train

    model_path, model_ref = resolve_model(store, model)
    parents = (data_ref, *problems_refs) + ((model_ref,) if model_ref else ())
    step = Step("policy", params_of(config, **model_identity(store, model)), parents)

    def build() -> Built:
        problems = index_problems(p for ref in problems_refs for p in read_problems(store, ref))
        rows = store.read_table(data_ref).to_pylist()
        with verify_config.verifier(sorted({domain for domain, _ in problems})) as verifier:
            result = train(model_path, rows, problems, verifier, config,
                           Path(work_dir) / step.key, on_log=on_log)
        return Built(model_dir=result.model_dir, extra={
            "rows_used": result.rows_used, "prompts_truncated": result.prompts_truncated,
            "base_model": model, "mode": "grpo"})

    return run_step(store, step, build, run_ids)
