"""`restrl train value`: the entry point `accelerate launch -m restrl.cli` runs on GPUs."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest

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
