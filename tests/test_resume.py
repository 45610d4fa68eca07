"""A pipeline killed with SIGKILL (its whole process group) resumes where it stopped.

The run is killed once during GRPO training (after its second checkpoint) and once during the
Stage 2 search (after its first shard of trees); the third run finishes. It must end with the
summary an uninterrupted run gives, without redoing a committed shard or a finished training
step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from restrl.artifacts import ArtifactStore

pytestmark = pytest.mark.slow

TINY = {
    "stage1": {
        "problems": [{"domain": "toy", "split": "train", "n": 8}],
        "sampling": {"n": 4, "max_tokens": 32, "shard_problems": 8},
        "grpo": {"max_steps": 4, "save_steps": 1, "num_generations": 4,
                 "batch_size_per_device": 4, "max_completion_length": 32},
    },
    "stage2": {
        "problems": {"n": 4, "seed": 1},
        "mcts": {"iteration_limit": 2, "num_sample": 2, "max_tokens": 32, "shard_problems": 2},
        "value_model": {"epochs": 1.0, "max_steps": 2, "batch_size_per_device": 8},
    },
    "eval_problems": {"split": "test", "n": 2},
    "eval": {"sampling": {"n": 2, "max_tokens": 32}, "ks": [1], "best_of_n": [2],
             "mcts": {"iteration_limit": 1, "num_sample": 2, "max_tokens": 32}},
    "verification": {"limits": {"timeout": 2.0}, "workers": 1},
}


def _start(tmp: Path, name: str, store: Path, log: Path) -> subprocess.Popen:
    params = {**TINY, "run": {"store": str(store), "work_dir": str(tmp / f"work-{name}")}}
    params_file = tmp / f"{name}.json"
    params_file.write_text(json.dumps(params))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / f'mlflow-{name}.db'}",
           "PREFECT_HOME": str(tmp / f"prefect-{name}"), "PREFECT_API_URL": ""}
    env.pop("PREFECT_API_URL")
    exe = Path(sys.executable).with_name("restrl")
    return subprocess.Popen([str(exe), "run", "pipeline", "--preset", "toy", "--params-file",
                             str(params_file)], env=env, stdout=log.open("a"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 600) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        assert proc.poll() is None, f"the run ended before {what}"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"timed out waiting for {what}")


def _finish(proc: subprocess.Popen, log: Path) -> dict:
    assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    text = log.read_text()
    return json.JSONDecoder().raw_decode(text, text.rindex('{\n  "policy"'))[0]


def _checkpoints(work: Path) -> list[Path]:
    return sorted(p for p in work.glob("*/checkpoints/checkpoint-*")
                  if (p / "trainer_state.json").exists())


def _values(summary: list[dict]) -> list[tuple]:
    return [(row["label"], row["value"]) for row in summary]


def test_pipeline_killed_in_training_and_in_search_resumes_to_the_same_summary(tmp_path):
    # The uninterrupted reference runs beside the killed runs (its own store): on two cores
    # the pair takes little longer than the killed runs alone.
    reference_run = _start(tmp_path, "ref", tmp_path / "ref-store", tmp_path / "ref.log")

    try:
        store, log, work = tmp_path / "store", tmp_path / "killed.log", tmp_path / "work-killed"
        first = _start(tmp_path, "killed", store, log)
        _kill_when(first, lambda: len(_checkpoints(work)) >= 2, "the second GRPO checkpoint")
        done_steps = {p: p.stat().st_mtime_ns for p in _checkpoints(work)}
        assert not list(store.glob("policy/*/manifest.json"))

        second = _start(tmp_path, "killed", store, log)
        shards = store / "mcts_nodes"
        _kill_when(second, lambda: any(shards.glob("*/shards/00000.parquet")),
                   "the first committed MCTS shard")
        assert {p: p.stat().st_mtime_ns for p in done_steps} == done_steps  # no step redone
        resumed_from = max(int(p.name.split("-")[1]) for p in done_steps)
        assert f"from step {resumed_from}" in log.read_text()
        (shard,) = shards.glob("*/shards/00000.parquet")
        committed_at = shard.stat().st_mtime_ns

        result = _finish(_start(tmp_path, "killed", store, log), log)
    except BaseException:
        os.killpg(reference_run.pid, signal.SIGKILL)
        raise
    reference = _finish(reference_run, tmp_path / "ref.log")
    assert shard.stat().st_mtime_ns == committed_at  # the committed shard was not searched again
    assert "1 of 2 shards already committed" in log.read_text()
    assert _values(result["summary"]) == _values(reference["summary"])
    ArtifactStore(str(store)).manifest(result["value_model"])  # committed
