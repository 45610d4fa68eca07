"""Champion/challenger promotion against a real MLflow registry, on hand-made evaluation runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from restrl import registry, tracking
from restrl.artifacts.store import ArtifactStore
from restrl.registry import PromotionRule, decide

METRIC = "vm_mcts/accuracy"


@pytest.fixture
def mlflow_sqlite(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def candidate(store: ArtifactStore, tmp_path: Path, tag: str,
              accuracy: float) -> tuple[str, str, str]:
    """A policy and a value model (tiny directories in the store) and an evaluation run."""
    uris = []
    for kind in ("policy", "value_model"):
        local = tmp_path / f"{kind}-{tag}"
        local.mkdir()
        (local / "config.json").write_text(f'{{"kind": "{kind}", "tag": "{tag}"}}')
        uris.append(store.put_model(local, kind, {"tag": tag}).uri)
    run_id = tracking.start_run(f"pipeline-{tag}")
    tracking.log_metrics(run_id, {METRIC: accuracy, "sample/pass@1": accuracy / 2})
    tracking.end_run(run_id)
    return uris[0], uris[1], run_id


def submit(store: ArtifactStore, tmp_path: Path, tag: str, accuracy: float,
           rule: PromotionRule | None = None) -> registry.Decision:
    policy, vm, run_id = candidate(store, tmp_path, tag, accuracy)
    return registry.promote_if_better(policy, vm, run_id, accuracy, rule or PromotionRule(METRIC),
                                      {"sample/pass@1": accuracy / 2})


def aliases(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in registry._client().get_registered_model(name).aliases.items()}


# ------------------------------------------------------------------ the rule alone


@pytest.mark.parametrize(("challenger", "champion", "margin", "promote"), [
    (0.5, None, 0.0, True),           # no champion yet
    (0.6, 0.5, 0.0, True),            # strictly better
    (0.5, 0.5, 0.0, False),           # tie
    (0.4, 0.5, 0.0, False),           # regression
    (0.55, 0.5, 0.1, False),          # better, but not by the margin
    (0.65, 0.5, 0.1, True),           # better by more than the margin
    (0.6, 0.5, 0.1, False),           # exactly the margin is not enough
    (math.nan, None, 0.0, False),     # NaN never promotes, not even the first
    (math.nan, 0.5, 0.0, False),
    (0.9, math.nan, 0.0, False),      # nothing beats an unknown number
])
def test_decide_promotes_only_on_strict_improvement(challenger, champion, margin, promote):
    decision = decide(challenger, champion, PromotionRule(METRIC, margin))
    assert decision.promote is promote
    assert METRIC in decision.reason


@pytest.mark.parametrize("margin", [-0.1, math.nan, math.inf])
def test_promotion_rule_rejects_negative_or_non_finite_margins(margin):
    with pytest.raises(ValueError):
        PromotionRule(METRIC, margin)


# ------------------------------------------------------------------ against the registry


def test_first_challenger_is_promoted_when_there_is_no_champion(mlflow_sqlite, store):
    assert registry.current_champion() is None
    policy, vm, run_id = candidate(store, mlflow_sqlite, "a", 0.5)
    decision = registry.promote_if_better(policy, vm, run_id, 0.5, PromotionRule(METRIC))
    assert decision.promote and decision.champion_metric is None
    champion = registry.current_champion()
    assert champion is not None
    assert (champion.version, champion.artifact_uri, champion.run_id) == ("1", policy, run_id)
    assert (champion.metric, champion.value) == (METRIC, 0.5)
    assert registry.current_champion(registry.VALUE_MODEL).artifact_uri == vm
    version = registry._client().get_model_version(registry.POLICY_MODEL, "1")
    assert version.source == policy  # a direct SQL store keeps our URI as the source
    assert version.tags["restrl.value_model_version"] == "1"
    assert "restrl.promoted_at" in version.tags


def test_worse_and_equal_challengers_are_registered_but_not_promoted(mlflow_sqlite, store):
    assert submit(store, mlflow_sqlite, "a", 0.5).promote
    worse = submit(store, mlflow_sqlite, "b", 0.4)
    assert not worse.promote and worse.champion_metric == 0.5
    assert aliases(registry.POLICY_MODEL) == {"champion": "1", "challenger": "2"}
    assert aliases(registry.VALUE_MODEL) == {"champion": "1", "challenger": "2"}
    equal = submit(store, mlflow_sqlite, "c", 0.5)
    assert not equal.promote and "did not improve" in equal.reason
    assert aliases(registry.POLICY_MODEL) == {"champion": "1", "challenger": "3"}
    tags = registry._client().get_model_version(registry.POLICY_MODEL, "3").tags
    assert tags["restrl.decision"] == equal.reason and "restrl.promoted_at" not in tags


def test_better_challenger_moves_champion_for_policy_and_value_model_together(
        mlflow_sqlite, store):
    submit(store, mlflow_sqlite, "a", 0.5)
    submit(store, mlflow_sqlite, "b", 0.4)
    better = submit(store, mlflow_sqlite, "c", 0.75)
    assert better.promote
    assert (better.policy_version, better.value_model_version) == ("3", "3")
    for name in (registry.POLICY_MODEL, registry.VALUE_MODEL):
        assert aliases(name) == {"champion": "3", "challenger": "3"}
    old = registry._client().get_model_version(registry.POLICY_MODEL, "1")
    assert old.aliases == [] and old.tags[registry.URI_TAG]  # the old champion stays registered
    champion = registry.current_champion()
    assert champion.value == 0.75 and champion.metric_value("sample/pass@1") == 0.375
    # the bar is now the new champion: 0.7 no longer promotes, even with a margin of 0
    assert not submit(store, mlflow_sqlite, "d", 0.7).promote


def test_min_improvement_holds_back_small_gains(mlflow_sqlite, store):
    rule = PromotionRule(METRIC, min_improvement=0.1)
    submit(store, mlflow_sqlite, "a", 0.5, rule)
    assert not submit(store, mlflow_sqlite, "b", 0.55, rule).promote
    assert submit(store, mlflow_sqlite, "c", 0.65, rule).promote
    assert registry.current_champion().version == "3"


def test_champion_without_the_rules_metric_is_not_replaced(mlflow_sqlite, store):
    submit(store, mlflow_sqlite, "a", 0.5)
    decision = submit(store, mlflow_sqlite, "b", 0.9, PromotionRule("best_of_8/accuracy"))
    assert not decision.promote and "no recorded" in decision.reason
    assert registry.current_champion().version == "1"


@pytest.mark.slow  # starts an `mlflow server` (shared with the other slow tests)
def test_local_source_on_an_mlflow_server_is_uploaded_to_the_run(mlflow_server, monkeypatch,
                                                                  tmp_path, store):
    """An `mlflow server` refuses file:// sources outside the run: the registry uploads them."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = f"restrl-policy-{tmp_path.name}"
    policy, _, run_id = candidate(store, tmp_path, "a", 0.5)
    version = registry.register_version(name, policy, run_id, {METRIC: 0.5})
    mv = registry._client().get_model_version(name, version)
    assert mv.source == f"runs:/{run_id}/registry/{name}"
    assert mv.tags[registry.URI_TAG] == policy and mv.aliases == ["challenger"]
    files = registry._client().list_artifacts(run_id, f"registry/{name}")
    assert [Path(f.path).name for f in files] == ["config.json"]


# ------------------------------------------------------------------ the retraining flow


def test_retrain_flow_imports_and_its_params_validate():
    from restrl_flows.params import RetrainParams
    from restrl_flows.retrain import retrain

    params = RetrainParams()
    assert params.promotion.metric == METRIC and params.pipeline.generator.model == "tiny"
    assert RetrainParams.model_validate(params.model_dump()) == params
    with pytest.raises(ValueError):
        RetrainParams(promotion={"min_improvement": -1.0})
    assert retrain.name == "retrain"


def test_starting_model_is_the_champion_policy_or_the_fallback(mlflow_sqlite, store):
    from restrl_flows.retrain import starting_model

    assert starting_model("tiny") == "tiny"
    policy, vm, run_id = candidate(store, mlflow_sqlite, "a", 0.5)
    registry.register_version(registry.POLICY_MODEL, policy, run_id, {METRIC: 0.5})
    assert starting_model("tiny") == "tiny"  # a challenger alone is not a champion
    registry.promote_if_better(policy, vm, run_id, 0.5)
    assert starting_model("tiny") == policy
