"""Champion/challenger promotion against a real MLflow registry, on hand-made evaluation runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from restrl import registry, tracking
from restrl.artifacts.store import ArtifactStore
from restrl.evaluation.paired import PairedComparison, compare_paired
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


def paired(champion: list[float], challenger: list[float]) -> PairedComparison:
    """A comparison of hand-made per-problem scores (problem i: champion[i], challenger[i])."""
    keys = [("toy", f"p{i}") for i in range(len(champion))]
    return compare_paired(dict(zip(keys, champion, strict=True)),
                          dict(zip(keys, challenger, strict=True)))


def noisy_one_point_gain() -> PairedComparison:
    """100 problems at 50%: the challenger wins 3 and loses 2 of them (+1 point), as noise does."""
    champion = [1.0] * 50 + [0.0] * 50
    challenger = list(champion)
    for i in (50, 51, 52):
        challenger[i] = 1.0
    for i in (0, 1):
        challenger[i] = 0.0
    return paired(champion, challenger)


def clear_gain(points: int = 20) -> PairedComparison:
    """100 problems: the challenger solves `points` more, and loses none."""
    champion = [1.0] * 40 + [0.0] * 60
    return paired(champion, [1.0] * (40 + points) + [0.0] * (60 - points))


def submit(store: ArtifactStore, tmp_path: Path, tag: str, comparison: PairedComparison | None,
           rule: PromotionRule | None = None) -> registry.Decision:
    policy, vm, run_id = candidate(store, tmp_path, tag, 0.5)
    return registry.promote_if_better(policy, vm, run_id, comparison,
                                      rule or PromotionRule(METRIC), {"test/sample/pass@1": 0.25})


def aliases(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in registry._client().get_registered_model(name).aliases.items()}


# ------------------------------------------------------------------ the rule alone


def test_a_noisy_one_point_gain_is_refused():
    comparison = noisy_one_point_gain()
    assert comparison.gain == pytest.approx(0.01) and comparison.p_value > 0.05
    decision = decide(comparison, PromotionRule(METRIC))
    assert not decision.promote and "not significant" in decision.reason
    assert decision.p_value == comparison.p_value


def test_a_clear_gain_is_promoted():
    comparison = clear_gain()
    assert comparison.gain == pytest.approx(0.2) and comparison.p_value < 0.001
    decision = decide(comparison, PromotionRule(METRIC))
    assert decision.promote and "significant gain" in decision.reason
    assert (decision.champion_metric, decision.challenger_metric) == (0.4, 0.6)


@pytest.mark.parametrize(("comparison", "rule", "promote"), [
    (None, PromotionRule(METRIC), True),                                   # no champion yet
    (clear_gain(10), PromotionRule(METRIC, min_improvement=0.15), False),  # under the margin
    (clear_gain(20), PromotionRule(METRIC, min_improvement=0.15), True),
    (paired([1.0, 0.0] * 20, [1.0, 0.0] * 20), PromotionRule(METRIC), False),  # a tie
    (paired([1.0] * 20, [0.0] * 20), PromotionRule(METRIC), False),            # a regression
    (clear_gain(3), PromotionRule(METRIC, confidence=0.5), True),   # a lower bar for evidence
    (paired([math.nan] * 4, [1.0] * 4), PromotionRule(METRIC), False),         # NaN never
])
def test_decide_promotes_only_a_significant_gain_above_the_margin(comparison, rule, promote):
    decision = decide(comparison, rule)
    assert decision.promote is promote
    assert METRIC in decision.reason


@pytest.mark.parametrize("margin", [-0.1, math.nan, math.inf])
def test_promotion_rule_rejects_negative_or_non_finite_margins(margin):
    with pytest.raises(ValueError):
        PromotionRule(METRIC, margin)


def test_comparing_different_problem_sets_is_refused():
    with pytest.raises(ValueError, match="same problem set"):
        compare_paired({("toy", "a"): 1.0, ("toy", "b"): 0.0}, {("toy", "a"): 1.0})


# ------------------------------------------------------------------ against the registry


def test_first_challenger_is_promoted_when_there_is_no_champion(mlflow_sqlite, store):
    assert registry.current_champion() is None
    policy, vm, run_id = candidate(store, mlflow_sqlite, "a", 0.5)
    decision = registry.promote_if_better(policy, vm, run_id, None, PromotionRule(METRIC))
    assert decision.promote and decision.champion_metric is None
    champion = registry.current_champion()
    assert champion is not None
    assert (champion.version, champion.artifact_uri, champion.run_id) == ("1", policy, run_id)
    assert champion.metric == METRIC
    assert registry.current_champion(registry.VALUE_MODEL).artifact_uri == vm
    version = registry._client().get_model_version(registry.POLICY_MODEL, "1")
    assert version.source == policy  # a direct SQL store keeps our URI as the source
    assert version.tags["restrl.value_model_version"] == "1"
    assert "restrl.promoted_at" in version.tags


def test_noise_is_registered_but_not_promoted_and_the_tags_say_why(mlflow_sqlite, store):
    assert submit(store, mlflow_sqlite, "a", None).promote
    noisy = submit(store, mlflow_sqlite, "b", noisy_one_point_gain())
    assert not noisy.promote
    assert aliases(registry.POLICY_MODEL) == {"champion": "1", "challenger": "2"}
    assert aliases(registry.VALUE_MODEL) == {"champion": "1", "challenger": "2"}
    tags = registry._client().get_model_version(registry.POLICY_MODEL, "2").tags
    assert tags["restrl.decision"] == noisy.reason and tags["restrl.promote"] == "False"
    assert float(tags["restrl.p_value"]) == noisy.p_value
    assert float(tags["restrl.challenger_metric"]) == pytest.approx(0.51)
    assert float(tags["restrl.metric.test/sample/pass_at_1"]) == 0.25  # reported, not decided on
    assert "restrl.promoted_at" not in tags


def test_a_clear_gain_moves_champion_for_policy_and_value_model_together(mlflow_sqlite, store):
    submit(store, mlflow_sqlite, "a", None)
    submit(store, mlflow_sqlite, "b", noisy_one_point_gain())
    better = submit(store, mlflow_sqlite, "c", clear_gain())
    assert better.promote
    assert (better.policy_version, better.value_model_version) == ("3", "3")
    for name in (registry.POLICY_MODEL, registry.VALUE_MODEL):
        assert aliases(name) == {"champion": "3", "challenger": "3"}
    old = registry._client().get_model_version(registry.POLICY_MODEL, "1")
    assert old.aliases == [] and old.tags[registry.URI_TAG]  # the old champion stays registered


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
    registry.promote_if_better(policy, vm, run_id, None)
    assert starting_model("tiny") == policy


@pytest.mark.parametrize(("metric", "rows_of"), [
    ("sample/pass@1", ("sample", None)), ("best_of_8/accuracy", ("best_of_n", 8)),
    ("majority_of_8/accuracy", ("majority_vote", 8)), ("vm_mcts/accuracy", ("vm_mcts", None)),
    ("best_of_8_vote/accuracy", ("best_of_n_vote", 8)),
    ("vm_mcts_vote/accuracy", ("vm_mcts_vote", None))])
def test_each_promotion_metric_reads_its_methods_rows(metric, rows_of):
    from restrl_flows.retrain import method_of

    assert method_of(metric) == rows_of
