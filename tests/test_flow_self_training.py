"""Stage 1 end to end as a Prefect flow on the toy domain with the tiny model (small budget)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from restrl.artifacts import ArtifactCorrupted, ArtifactStore
from restrl.sampling import SamplingConfig
from restrl.steps.models import GeneratorSpec
from restrl.steps.problems import ProblemSource, load_problems
from restrl.steps.sample import sample

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_harness(tmp_path_factory):
    from prefect.testing.utilities import prefect_test_harness

    results = tmp_path_factory.mktemp("prefect-results")
    old = os.environ.get("PREFECT_RESULTS_LOCAL_STORAGE_PATH")
    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(results)
    with prefect_test_harness(server_startup_timeout=120):
        yield
    if old is None:
        os.environ.pop("PREFECT_RESULTS_LOCAL_STORAGE_PATH", None)
    else:
        os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = old


def small_params(store: str, work: Path, **changes):
    from restrl_flows.params import SelfTrainingParams

    values = {
        "problems": {"domain": "toy", "split": "train", "n": 8, "seed": 0},
        "eval_problems": {"domain": "toy", "split": "test", "n": 8, "seed": 0},
        "sampling": {"n": 4, "temperature": 1.0, "max_tokens": 48, "shard_problems": 4},
        "eval_sampling": {"n": 2, "temperature": 0.7, "max_tokens": 48},
        "verification": {"limits": {"timeout": 2.0}, "workers": 2},
        "grpo": {"max_completion_length": 48, "num_generations": 4, "batch_size_per_device": 8,
                 "max_steps": 2, "learning_rate": 1e-4, "save_steps": 0,
                 "max_prompt_length": 512},
        "run": {"store": store, "work_dir": str(work)},
    }
    for dotted, value in changes.items():
        node = values
        *path, last = dotted.split("__")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return SelfTrainingParams.model_validate(values)


def test_self_training_flow_runs_caches_and_detects_corruption(prefect_harness, tmp_path,
                                                               monkeypatch):
    from mlflow.tracking import MlflowClient

    from restrl import tracking
    from restrl_flows.self_training import self_training

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    store_root = str(tmp_path / "artifacts")
    first = self_training(small_params(store_root, tmp_path / "work"))
    store = ArtifactStore(store_root)
    for kind in ("problems", "completions", "verdicts", "grpo_data", "policy"):
        assert f"/{kind}/" in first[kind if kind != "grpo_data" else "grpo_data"]
    assert store.read_table(first["completions"]).num_rows == 8 * 4
    policy_dir = store.model_path(first["policy"])
    assert (policy_dir / "config.json").exists()
    lineage = store.lineage(first["policy"])
    assert {p["kind"] for p in lineage["parents"]} >= {"grpo_data", "problems"}

    client = MlflowClient(tracking.tracking_uri())
    parent = client.get_run(first["mlflow_run_id"])
    assert "eval/base_pass_at_1" in parent.data.metrics
    assert "eval/trained_pass_at_1" in parent.data.metrics
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert [c.info.run_name for c in children] == ["train-grpo"]
    assert tracking.metric_history(children[0].info.run_id, "reward")
    plots = [a.path for a in client.list_artifacts(parent.info.run_id, "plots")]
    assert plots == ["plots/reward_distribution.png"]

    # Same parameters: served from cache, no sampling and no training.
    import restrl.sampling
    import restrl.training.grpo

    def forbidden(*args, **kwargs):
        raise AssertionError("a cached step ran again")

    monkeypatch.setattr(restrl.sampling, "sample_problems", forbidden)
    monkeypatch.setattr(restrl.training.grpo, "train_grpo", forbidden)
    second = self_training(small_params(store_root, tmp_path / "work"))
    for key in ("problems", "completions", "verdicts", "grpo_data", "policy"):
        assert second[key] == first[key]

    # A corrupted artifact is detected when a changed step reads it.
    verdicts_file = Path(first["verdicts"].removeprefix("file://")) / "data.parquet"
    data = bytearray(verdicts_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    verdicts_file.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupted):
        self_training(small_params(store_root, tmp_path / "work", rest__alpha=0.9,
                                   eval_problems=None))


SAMPLER = """
import sys
from restrl.artifacts import ArtifactStore
from restrl.sampling import SamplingConfig
from restrl.steps.models import GeneratorSpec
from restrl.steps.problems import ProblemSource, load_problems
from restrl.steps.sample import sample
store = ArtifactStore(sys.argv[1])
problems, _ = load_problems(store, ProblemSource(n=12))
config = SamplingConfig(n=2, max_tokens=32, shard_problems=4)
ref = sample(store, problems, GeneratorSpec(), config)
print(ref.uri)
"""


def test_sampling_killed_midway_resumes_from_committed_shards(tmp_path):
    store_root = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, "-c", SAMPLER, str(store_root)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    shard_dir = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((store_root / "completions").glob("*/shards/00000.parquet"))
        if found:
            shard_dir = found[0].parent
            break
        time.sleep(0.05)
    assert shard_dir is not None, "the first shard was never committed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first_shard = shard_dir / "00000.parquet"
    committed_at = first_shard.stat().st_mtime_ns
    assert not (shard_dir.parent / "manifest.json").exists()

    resumed = subprocess.run([sys.executable, "-c", SAMPLER, str(store_root)],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert first_shard.stat().st_mtime_ns == committed_at  # not redone
    clean = subprocess.run([sys.executable, "-c", SAMPLER, str(tmp_path / "clean")],
                           capture_output=True, text=True, check=True).stdout.strip()
    resumed_table = ArtifactStore(str(store_root)).read_table(resumed)
    clean_table = ArtifactStore(str(tmp_path / "clean")).read_table(clean)
    assert resumed_table.equals(clean_table)


def test_steps_skip_work_when_the_artifact_exists(tmp_path):
    store = ArtifactStore(str(tmp_path))
    problems, _ = load_problems(store, ProblemSource(n=2))
    again, _ = load_problems(store, ProblemSource(n=2))
    assert again == problems
    config = SamplingConfig(n=1, max_tokens=8, shard_problems=1)
    ref = sample(store, problems, GeneratorSpec(), config)
    assert sample(store, problems, GeneratorSpec(), config) == ref


def test_self_training_flow_on_s3_and_an_mlflow_server(prefect_harness, s3_bucket, mlflow_server,
                                                       tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from restrl_flows.self_training import self_training

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    result = self_training(small_params(f"s3://{s3_bucket}/restrl", tmp_path / "work",
                                        eval_problems=None))
    assert result["policy"].startswith(f"s3://{s3_bucket}/restrl/policy/")
    store = ArtifactStore(f"s3://{s3_bucket}/restrl")
    assert store.read_table(result["verdicts"]).num_rows == 8 * 4
    assert (store.model_path(result["policy"], cache_dir=tmp_path / "models")
            / "config.json").exists()
    run = MlflowClient(mlflow_server).get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and "verify/mean_reward" in run.data.metrics


@pytest.mark.parametrize("mode", ["dpo", "sft"])
def test_self_training_with_rest_mode_dpo_or_sft_trains_that_policy(prefect_harness, tmp_path,
                                                                    monkeypatch, mode):
    """`restrl run self-training --preset toy --set rest.mode=dpo|sft` end to end."""
    from mlflow.tracking import MlflowClient

    from restrl import tracking
    from restrl_flows.cli import run_flow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    store_root = str(tmp_path / "artifacts")
    result = run_flow("self-training", [
        f"rest.mode={mode}", "problems.0.n=16", "sampling.n=4", "sampling.max_tokens=48",
        "eval_problems=null", f"{mode}.max_steps=2", f"run.store={store_root}",
        f"run.work_dir={tmp_path / 'work'}", "verification.workers=2"], None, preset="toy")
    store = ArtifactStore(store_root)
    assert store.read_table(result[f"{mode}_data"]).num_rows > 0
    lineage = store.lineage(result["policy"])
    assert [p["kind"] for p in lineage["parents"]][0] == f"{mode}_data"
    assert (store.model_path(result["policy"]) / "config.json").exists()
    client = MlflowClient(tracking.tracking_uri())
    parent = client.get_run(result["mlflow_run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert [c.info.run_name for c in children] == [f"train-{mode}"]
