"""A Trainer callback that hands numeric logs to the caller (who sends them to MLflow)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

OnLog = Callable[[int, dict[str, float]], None]


def numeric_logs(logs: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a Trainer log record."""
    return {k: float(v) for k, v in logs.items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))}


def forward_logs_callback(on_log: OnLog | None) -> Any:
    """A `TrainerCallback` calling `on_log(step, numeric logs)` at each logging step."""
    from transformers import TrainerCallback

    class ForwardLogs(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
            if on_log is not None and logs:
                on_log(state.global_step, numeric_logs(logs))

    return ForwardLogs()


def quiet_progress(trainer: Any) -> None:
    """No per-step dict printing (MLflow has those); a progress bar only on a terminal."""
    import sys

    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class ProgressBarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
            return None

    trainer.pop_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None and sys.stderr.isatty():
        trainer.add_callback(ProgressBarOnly())
