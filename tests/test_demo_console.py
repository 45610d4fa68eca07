"""`restrl demo` on a tiny budget, as a newcomer runs it: a quiet console, one line per step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TINY = ["stage1.problems.0.n=8", "stage1.sampling.n=4", "stage1.sampling.max_tokens=32",
        "stage1.grpo.max_steps=2", "stage1.grpo.batch_size_per_device=4",
        "stage1.grpo.num_generations=4", "stage2.problems.n=4", "stage2.mcts.iteration_limit=2",
        "stage2.mcts.max_tokens=32", "stage2.value_model.max_steps=2", "eval_problems.n=2",
        "eval.sampling.n=2", "eval.sampling.max_tokens=32", "eval.best_of_n=[2]", "eval.ks=[1]",
        "eval.mcts.iteration_limit=1", "eval.mcts.max_tokens=32"]


def test_demo_console_shows_one_line_per_step_and_no_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    work = tmp_path / "cwd"
    work.mkdir()
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}",
               PREFECT_HOME=str(tmp_path / "prefect"))
    (tmp_path / "db").mkdir()
    sets = [f"--set={item}" for item in [*TINY, f"run.store={tmp_path / 'artifacts'}",
                                          f"run.work_dir={tmp_path / 'work'}"]]
    summary = tmp_path / "summary.json"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("restrl")), "demo", *sets, "--summary-path",
         str(summary)], env=env, cwd=work, capture_output=True, text=True, timeout=900)
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-4000:]
    for alarming in ("Traceback", "ERROR", "WARNING", "Warning:"):
        assert alarming not in console, console
    steps = ["problems:", "sampled", "verified", "ReST grpo data:", "GRPO policy trained",
             "MCTS:", "value data:", "value model trained:", "evaluated base:",
             "evaluated trained:"]
    for step in steps:
        assert step in console, (step, console)
    assert len(console.splitlines()) < 40, console  # one line per step, then the table
    rows = json.loads(summary.read_text())["rows"]
    assert [row["label"] for row in rows][:2] == ["base policy, pass@1", "after ReST-GRPO, pass@1"]
    assert not list(work.iterdir())  # nothing in the working directory: MLflow's artifacts
    assert list((tmp_path / "db" / "mlruns").rglob("*.png"))  # sit beside its database
