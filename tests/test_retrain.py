"""The retraining flow end to end on a tiny budget: champion vs challenger on validation."""

from __future__ import annotations

import os

import pytest
from test_flow_pipeline import tiny_pipeline_params

pytestmark = pytest.mark.slow


def test_retrain_compares_champion_and_challenger_on_validation_and_tags_the_decision(
        tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from prefect.testing.utilities import prefect_test_harness

    from restrl import registry, tracking
    from restrl_flows.params import RetrainParams
    from restrl_flows.retrain import retrain

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(tmp_path / "results"))
    # A champion to beat: the tiny model itself, registered and promoted by hand.
    run_id = tracking.start_run("earlier-pipeline")
    tracking.end_run(run_id)
    version = registry.register_version(registry.POLICY_MODEL, "tiny", run_id)
    registry.promote(registry.POLICY_MODEL, version, "by hand", "sample/pass@1")
    pipeline = tiny_pipeline_params()
    pipeline["run"] = {"store": str(tmp_path / "artifacts"), "work_dir": str(tmp_path / "work")}
    params = RetrainParams.model_validate({
        "pipeline": pipeline, "promotion": {"metric": "sample/pass@1"},
        "validation_problems": {"domain": "toy", "split": "validation", "n": 4}})
    with prefect_test_harness(server_startup_timeout=120):
        result = retrain(params)

    assert result["starting_model"] == "tiny" and result["metric"] == "sample/pass@1"
    assert result["problems"] == 4 and 0.0 <= result["p_value"] <= 1.0
    assert result["promote"] == (result["challenger_metric"] > result["champion_metric"]
                                 and result["p_value"] <= 0.05)
    assert result["test_metric"] is not None  # reported, not decided on
    tags = MlflowClient(tracking.tracking_uri()).get_model_version(
        registry.POLICY_MODEL, result["policy_version"]).tags
    assert tags["restrl.decision"] == result["reason"]
    assert float(tags["restrl.p_value"]) == result["p_value"]
    assert os.path.exists(tmp_path / "artifacts" / "eval_results")
