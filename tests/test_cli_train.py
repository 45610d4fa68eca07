"""`restrl train value`: the entry point `accelerate launch -m restrl.cli` runs on GPUs."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest
from conftest import store_base_grpo_data

from restrl.artifacts import ArtifactStore

pytestmark = pytest.mark.slow


def test_train_value_from_a_stored_value_data_artifact(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    rows = [{"prompt": "Write f.\n```python\ndef f(x):\n", "answer": answer, "reward": reward,
             "source": "terminal", "problem_id": "p"}
            for answer, reward in [("    return x + 1\n", 1.0), ("    return x\n", 0.0)] * 8]
    data = store.put_table(pa.Table.from_pylist(rows), "value_data", {"test": 1})
    out = subprocess.run(
        [sys.executable, "-m", "restrl.cli", "train", "value", "--model", "tiny",
         "--data", data.uri, "--set", "max_steps=2", "--set", "save_steps=0",
         "--set", "learning_rate=1e-3", "--work-dir", str(tmp_path / "work")],
        capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    assert out.startswith(store.root + "/value_model/")
    assert store.lineage(out)["parents"][0]["uri"] == data.uri
    assert (store.model_path(out) / "restrl_value.json").exists()


def test_train_grpo_runs_as_the_readme_documents_it(tmp_path):
    """README: `restrl train grpo --model tiny --data URI --problems URI --set
    gradient_accumulation_steps=4` (one group of 8 on one process; max_steps keeps it short)."""
    store = ArtifactStore(str(tmp_path / "store"))
    problems_ref, data = store_base_grpo_data(store)
    out = subprocess.run(
        [sys.executable, "-m", "restrl.cli", "train", "grpo", "--model", "tiny",
         "--data", data.uri, "--problems", problems_ref.uri,
         "--set", "gradient_accumulation_steps=4", "--set", "max_steps=1",
         "--set", "max_completion_length=16", "--work-dir", str(tmp_path / "work")],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    policy = out.stdout.strip().splitlines()[-1]
    assert policy.startswith(store.root + "/policy/")
    assert {p["kind"] for p in store.lineage(policy)["parents"]} == {"grpo_data", "problems"}
