"""The whole pipeline (Stage 1 -> Stage 2 -> evaluation) inside the suite on a tiny budget."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow

TINY_BUDGET = {
    "stage1": {
        "problems": [{"domain": "toy", "split": "train", "n": 4}],
        "sampling": {"n": 4, "max_tokens": 48, "shard_problems": 4},
        "grpo": {"max_steps": 1, "num_generations": 4, "batch_size_per_device": 8,
                 "max_completion_length": 48},
    },
    "stage2": {
        "problems": {"n": 4, "seed": 1},
        "mcts": {"iteration_limit": 2, "num_sample": 2, "max_tokens": 48},
        "value_model": {"epochs": 1.0, "max_steps": 2, "batch_size_per_device": 8},
    },
    "eval_problems": {"split": "test", "n": 4},
    "eval": {"sampling": {"n": 2, "max_tokens": 48}, "ks": [1, 2], "best_of_n": [2],
             "mcts": {"iteration_limit": 1, "num_sample": 2, "max_tokens": 48}},
    "verification": {"limits": {"timeout": 2.0}, "workers": 2},
}


def tiny_pipeline_params() -> dict:
    """PipelineParams' full JSON with the toy preset and TINY_BUDGET merged in (what a user
    would paste)."""
    from restrl_flows.cli import deep_merge
    from restrl_flows.params import PipelineParams

    return deep_merge(PipelineParams.toy().model_dump(mode="json"), TINY_BUDGET)


@pytest.fixture(scope="module")
def prefect_harness(tmp_path_factory):
    from prefect.testing.utilities import prefect_test_harness

    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(tmp_path_factory.mktemp("results"))
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_pipeline_runs_end_to_end_and_reports_every_method(prefect_harness, tmp_path,
                                                           monkeypatch):
    from mlflow.tracking import MlflowClient

    from restrl import tracking
    from restrl.artifacts import ArtifactStore
    from restrl_flows.params import PipelineParams
    from restrl_flows.pipeline import pipeline

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    values = tiny_pipeline_params()
    values["run"] = {"store": str(tmp_path / "artifacts"), "work_dir": str(tmp_path / "work")}
    result = pipeline(PipelineParams.model_validate(values))

    labels = [row["label"] for row in result["summary"]]
    assert labels == ["base policy, pass@1", "after ReST-GRPO, pass@1",
                      "majority vote of N samples (no value model)",
                      "best-of-N with the value model",
                      "best-of-N, votes weighted by the value model",
                      "VM-MCTS at the same budget", "VM-MCTS, answer by weighted vote",
                      "oracle: best-of-N with the verifier (pass@N)",
                      "oracle: MCTS valued by the verifier"]
    by_label = {row["label"]: row for row in result["summary"]}
    assert by_label["best-of-N with the value model"]["completions"] == 2.0
    assert by_label["majority vote of N samples (no value model)"]["completions"] == 2.0
    # Both answer rules read the same trees: the same spend.
    assert (by_label["VM-MCTS, answer by weighted vote"]["tokens"]
            == by_label["VM-MCTS at the same budget"]["tokens"])
    assert by_label["after ReST-GRPO, pass@1"]["completions"] == 1.0
    assert by_label["after ReST-GRPO, pass@1"]["tokens"] > 0
    assert result["value_model_auc"] is None or 0.0 <= result["value_model_auc"] <= 1.0
    trained = result["evaluation"]["trained"]["metrics"]
    within = result["value_model_within_problem_auc"]
    if trained["value_model/within_problem_pairs"] == 0:
        assert within is None  # not measurable: "-" in the summary, never NaN in its JSON
    else:
        assert within == trained["value_model/within_problem_auc"]
    assert all(0.0 <= row["value"] <= 1.0 for row in result["summary"])
    store = ArtifactStore(values["run"]["store"])
    lineage = store.lineage(result["value_model"])
    assert lineage["parents"][0]["kind"] == "value_data"
    eval_rows = store.read_table(result["evaluation"]["trained"]["eval_results"]).to_pylist()
    assert {r["method"] for r in eval_rows} == {"sample", "majority_vote", "best_of_n",
                                                "best_of_n_vote", "vm_mcts", "vm_mcts_vote",
                                                "oracle_mcts"}

    client = MlflowClient(tracking.tracking_uri())
    trained_eval = client.get_run(result["evaluation"]["trained"]["mlflow_run_id"])
    assert "vm_mcts/accuracy" in trained_eval.data.metrics
    artifacts = [a.path for a in client.list_artifacts(trained_eval.info.run_id, "plots")]
    assert artifacts == ["plots/accuracy_vs_budget.png", "plots/value_calibration.png"]
    experiment = client.get_run(result["mlflow_run_id"]).info.experiment_id
    models = {m.name: m for m in client.search_logged_models([experiment])}
    assert models["policy"].tags["restrl.artifact_uri"] == result["policy"]
    assert models["value_model"].tags["restrl.artifact_uri"] == result["value_model"]
    assert {m.key for m in models["value_model"].metrics} >= {"after/mse", "after/accuracy"}
    graphs = [a.path for a in client.list_artifacts(result["mlflow_run_id"], "lineage")]
    assert graphs == ["lineage/policy.mmd", "lineage/value_model.mmd"]
