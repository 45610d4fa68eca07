"""MLflow helpers against a real SQLite tracking store."""

from __future__ import annotations

import pytest

from restrl import tracking


@pytest.fixture
def mlflow_sqlite(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def test_nested_runs_carry_params_metrics_and_inputs(mlflow_sqlite):
    from mlflow.tracking import MlflowClient

    parent = tracking.start_run("self-training", {"domain": "toy", "n": 4})
    child = tracking.start_run("grpo", {"lr": 1e-5}, parent_run_id=parent)
    for step, reward in enumerate([0.1, 0.3, 0.5]):
        tracking.log_metrics(child, {"reward_mean": reward}, step=step)
    tracking.log_input(child, "file:///tmp/a/grpo_data/k", "ab" * 32, "grpo_data")
    tracking.end_run(child)
    tracking.end_run(parent)
    client = MlflowClient(tracking.tracking_uri())
    run = client.get_run(child)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params["lr"] == "1e-05"
    assert tracking.metric_history(child, "reward_mean") == [0.1, 0.3, 0.5]
    inputs = run.inputs.dataset_inputs
    assert inputs[0].dataset.name == "grpo_data" and inputs[0].dataset.digest.startswith("abab")
    assert run.info.status == "FINISHED"


def test_default_tracking_keeps_artifacts_under_dot_restrl(tmp_path, monkeypatch):
    """No MLFLOW_TRACKING_URI: the database and the artifacts both live in .restrl/, never in
    ./mlruns of the working directory."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    run_id = tracking.start_run("plot-run", experiment="where")
    plot = tmp_path / "plot.png"
    plot.write_bytes(b"png")
    tracking.log_artifact_file(run_id, plot, "plots")
    tracking.end_run(run_id)
    location = MlflowClient(tracking.tracking_uri()).get_experiment_by_name("where")
    assert location.artifact_location == (tmp_path / ".restrl" / "mlruns" / "where").as_uri()
    assert list((tmp_path / ".restrl" / "mlruns" / "where").rglob("plot.png"))
    assert not (tmp_path / "mlruns").exists()
