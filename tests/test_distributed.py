"""`accelerate launch --num_processes 2` of `restrl train grpo|value` on the CPU (gloo), plain and
under DeepSpeed ZeRO-2/3: both ranks train, rank 0 alone commits the artifact, and GRPO's batch
check counts the processes.

On the CPU, accelerate needs `--multi_gpu` to start several processes (it then runs torchrun;
with `--cpu` it starts one). DeepSpeed's first CPU run builds its shared-memory collective op
(`deepspeed_shm_comm_op`, ~80 s with ninja, cached in ~/.cache/torch_extensions afterwards).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import store_base_grpo_data

from restrl.artifacts import ArtifactStore

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "restrl" / "training" / "configs"
BATCH_LINE = "Total train batch size (w. parallel, distributed & accumulation) = "


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(*cli: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`accelerate launch` two CPU processes of `python -m restrl.cli *cli`."""
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "info", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               "-m", "restrl.cli", *cli]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO)


def committed(store: ArtifactStore, kind: str) -> list[Path]:
    root = Path(store.root.removeprefix("file://")) / kind
    return sorted(p for p in root.iterdir() if (p / "manifest.json").exists())


def uri_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("file://")]


@pytest.fixture
def grpo_inputs(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    problems_ref, data = store_base_grpo_data(store)
    return store, ["train", "grpo", "--model", "tiny", "--data", data.uri, "--problems",
                   problems_ref.uri, "--work-dir", str(tmp_path / "work"),
                   "--set", "max_steps=1", "--set", "max_completion_length=8",
                   "--set", "save_steps=0"]


@pytest.fixture
def value_inputs(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    rows = [{"prompt": "Write f.\n```python\ndef f(x):\n", "answer": answer, "reward": reward,
             "source": "terminal", "problem_id": "p"}
            for answer, reward in [("    return x + 1\n", 1.0), ("    return x\n", 0.0)] * 8]
    data = store.put_table(pa.Table.from_pylist(rows), "value_data", {"test": 1})
    return store, ["train", "value", "--model", "tiny", "--data", data.uri,
                   "--work-dir", str(tmp_path / "work"), "--set", "max_steps=2",
                   "--set", "save_steps=0", "--set", "learning_rate=1e-3"]


def assert_two_ranks_trained_and_one_commit(run: subprocess.CompletedProcess,
                                            store: ArtifactStore, kind: str,
                                            total_batch: int) -> None:
    assert run.returncode == 0, run.stderr[-4000:]
    # Both ranks stepped: the batch spans two processes, and DDP/ZeRO's collectives would have
    # hung rank 0 had rank 1 not trained (both exit 0).
    assert f"{BATCH_LINE}{total_batch}" in run.stderr
    (uri,) = uri_lines(run.stdout)  # only rank 0 prints
    (path,) = committed(store, kind)  # only rank 0 commits
    assert uri.endswith(path.name)


@pytest.mark.parametrize("zero", [None, "zero2.json"])
def test_grpo_on_two_cpu_processes_counts_them_in_the_group_batch(grpo_inputs, zero):
    """batch 2 per device x 2 processes = one group of 4: on one process this stops (the batch
    check), on two it trains."""
    store, cli = grpo_inputs
    extra = ["--set", f"deepspeed_config={CONFIGS / zero}"] if zero else []
    if zero:
        pytest.importorskip("deepspeed")
    run = launch(*cli, "--set", "num_generations=4", *extra, timeout=400)
    assert_two_ranks_trained_and_one_commit(run, store, "policy", total_batch=4)
    if zero:  # DeepSpeed's CPU collectives started on both ranks
        assert run.stdout.count("deepspeed_shm_comm_op built successfully") == 2


def test_grpo_on_two_cpu_processes_says_how_to_make_whole_groups(grpo_inputs):
    store, cli = grpo_inputs
    run = launch(*cli, "--set", "num_generations=8")
    assert run.returncode != 0
    assert "processes (2)" in run.stderr and "gradient_accumulation_steps to 2" in run.stderr
    assert not (Path(store.root.removeprefix("file://")) / "policy").exists()


@pytest.mark.parametrize("zero", [None, "zero3.json"])
def test_value_model_on_two_cpu_processes(value_inputs, zero):
    store, cli = value_inputs
    extra = ["--set", f"deepspeed_config={CONFIGS / zero}"] if zero else []
    if zero:
        pytest.importorskip("deepspeed")
    run = launch(*cli, *extra, timeout=400)
    assert_two_ranks_trained_and_one_commit(run, store, "value_model", total_batch=2)
    if zero:  # the weights loaded partitioned (deepspeed.zero.Init), which needs the fix in
        # trainer_args.init_deepspeed_on_cpu: without it ZeRO-3 counts one process and stops
        assert "Detected DeepSpeed ZeRO-3" in run.stderr
