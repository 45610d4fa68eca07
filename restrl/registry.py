"""Champion/challenger promotion in the MLflow model registry.

Every retraining run registers its policy and value model as new versions of two registered
models and points their `challenger` alias at them. The pair is promoted (alias `champion`) only
when, evaluated in the same run on the same validation problems as the champion, the challenger
is better by more than `PromotionRule.min_improvement` and significantly so: the one-sided
p-value of a paired bootstrap over problems (`restrl.evaluation.paired`) is at most
1 - `confidence`. Ties, regressions, noise and NaN never promote. Policy and value model move
together: the value model was trained on the policy's own MCTS rollouts.

A version's `source` is our artifact URI. A direct SQLite/Postgres store accepts any source, and an
`mlflow server` accepts `s3://` ones, but a server refuses a local (`file://`) source that is not
inside the run's MLflow artifact directory; then the model directory is logged as an artifact of
the run and the version's source is `runs:/<run_id>/registry/<name>`. Either way our URI is kept in
the version tag `restrl.artifact_uri`, which is what `current_champion` returns. Metrics are
version tags `restrl.metric.<name>` (names through `tracking.metric_name`: `pass@1` ->
`pass_at_1`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import Field

from restrl import tracking
from restrl.configs import config
from restrl.evaluation.paired import PairedComparison

POLICY_MODEL = "restrl-policy"
VALUE_MODEL = "restrl-value-model"
CHAMPION = "champion"
CHALLENGER = "challenger"
URI_TAG = "restrl.artifact_uri"
METRIC_TAG = "restrl.metric."
PROMOTED_METRIC_TAG = "restrl.promoted_metric"


@config(frozen=True)
class PromotionRule:
    """When a challenger replaces the champion."""

    metric: str = Field("vm_mcts/accuracy", description=(
        "The trained policy's evaluation metric to compare (a key of the evaluation's metrics, "
        "e.g. vm_mcts/accuracy or sample/pass@1); higher is better. When the evaluation lacks "
        "it the retrain flow compares on sample/pass@1 and says so in its summary."))
    min_improvement: float = Field(0.0, description=(
        "The challenger's mean gain over the champion must be strictly more than this "
        "(0.0: any gain that is significant)."))
    confidence: float = Field(0.95, gt=0, lt=1, description=(
        "Promote only when the paired bootstrap's one-sided p-value of the gain is at most "
        "1 - confidence (0.95: p <= 0.05)."))

    def __post_init__(self) -> None:
        if not math.isfinite(self.min_improvement) or self.min_improvement < 0:
            raise ValueError("min_improvement must be a finite number >= 0")


@dataclass(frozen=True)
class Decision:
    """The outcome of one comparison, with the registry versions it concerned when known."""

    promote: bool
    reason: str
    metric: str | None = None
    challenger_metric: float | None = None
    champion_metric: float | None = None
    p_value: float | None = None
    problems: int | None = None
    policy_version: str | None = None
    value_model_version: str | None = None


@dataclass(frozen=True)
class ChampionInfo:
    """The version holding the `champion` alias and what it was promoted with."""

    name: str
    version: str
    artifact_uri: str
    run_id: str | None
    metric: str | None
    value: float | None
    metrics: dict[str, float] = field(default_factory=dict)

    def metric_value(self, key: str) -> float | None:
        return self.metrics.get(tracking.metric_name(key))


def decide(comparison: PairedComparison | None, rule: PromotionRule) -> Decision:
    """Promote when there is no champion, or the challenger's gain on the same validation
    problems is above the margin and significant at the rule's confidence."""
    if comparison is None:
        return Decision(True, f"no champion yet; nothing to compare {rule.metric} with",
                        rule.metric)
    base = {"metric": rule.metric, "challenger_metric": comparison.challenger,
            "champion_metric": comparison.champion, "p_value": comparison.p_value,
            "problems": comparison.problems}
    gain, p_value, alpha = comparison.gain, comparison.p_value, 1 - rule.confidence
    figures = (f"{rule.metric} {comparison.challenger:.4f} vs champion "
               f"{comparison.champion:.4f} on {comparison.problems} problems (gain {gain:+.4f}, "
               f"p = {p_value:.4f})")
    if math.isnan(gain) or math.isnan(p_value):
        return Decision(False, f"{rule.metric} is not a number: not promoting", **base)
    if gain <= rule.min_improvement:
        return Decision(False, f"no gain above {rule.min_improvement:g}: {figures}", **base)
    if p_value > alpha:
        return Decision(False, f"gain not significant at {rule.confidence:g}: {figures}", **base)
    return Decision(True, f"significant gain: {figures}", **base)


# ---------------------------------------------------------------------- MLflow I/O


def _client():  # noqa: ANN202
    from mlflow.tracking import MlflowClient

    uri = tracking.tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _metric_tags(metrics: Mapping[str, float]) -> dict[str, str]:
    return {METRIC_TAG + tracking.metric_name(k): repr(float(v))
            for k, v in metrics.items() if v is not None}


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="restrl: see restrl/registry.py")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _local_dir(uri: str) -> Path:
    """The local directory behind a file:// artifact URI (the model files of a store artifact)."""
    from restrl.artifacts.store import ArtifactError, store_for

    try:
        return store_for(uri).model_path(uri)
    except ArtifactError:
        return Path(uri.removeprefix("file://"))


def register_version(name: str, artifact_uri: str, run_id: str | None,
                     metrics: Mapping[str, float] | None = None,
                     tags: Mapping[str, str] | None = None) -> str:
    """Register `artifact_uri` as a new version of `name`, alias it `challenger`, return it."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.uri import is_local_uri

    client = _client()
    _ensure_registered_model(client, name)
    all_tags = {**(tags or {}), **_metric_tags(metrics or {}), URI_TAG: artifact_uri}
    try:
        version = client.create_model_version(name, artifact_uri, run_id, tags=all_tags)
    except MlflowException as exc:
        local = "://" not in artifact_uri or artifact_uri.startswith("file://")
        if not (local and is_local_uri(artifact_uri) and run_id
                and exc.error_code == "INVALID_PARAMETER_VALUE"):
            raise
        # An MLflow server refuses local sources outside the run: upload the directory instead.
        path = f"registry/{name}"
        client.log_artifacts(run_id, str(_local_dir(artifact_uri)), path)
        version = client.create_model_version(name, f"runs:/{run_id}/{path}", run_id,
                                              tags=all_tags)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return str(version.version)


def current_champion(name: str = POLICY_MODEL) -> ChampionInfo | None:
    """The version aliased `champion`, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        if CHAMPION not in client.get_registered_model(name).aliases:
            return None
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    mv = client.get_model_version_by_alias(name, CHAMPION)
    metrics = {k[len(METRIC_TAG):]: float(v) for k, v in mv.tags.items()
               if k.startswith(METRIC_TAG)}
    metric = mv.tags.get(PROMOTED_METRIC_TAG)
    value = metrics.get(tracking.metric_name(metric)) if metric else None
    return ChampionInfo(name, str(mv.version), mv.tags.get(URI_TAG, mv.source), mv.run_id,
                        metric, value, metrics)


def promote(name: str, version: str, reason: str, metric: str | None = None) -> None:
    """Move the `champion` alias to `version` (the old champion keeps its number, loses the alias)
    and record why and when on the version."""
    client = _client()
    client.set_registered_model_alias(name, CHAMPION, version)
    tags = {"restrl.promotion_reason": reason, "restrl.promoted_at": _now()}
    if metric:
        tags[PROMOTED_METRIC_TAG] = metric
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def promote_if_better(policy_uri: str, value_model_uri: str, run_id: str | None,
                      comparison: PairedComparison | None, rule: PromotionRule | None = None,
                      metrics: Mapping[str, float] | None = None, *,
                      policy_name: str = POLICY_MODEL,
                      value_model_name: str = VALUE_MODEL) -> Decision:
    """Register policy and value model as challengers; promote both when `decide` says so.

    `comparison` is the challenger against the champion on the same validation problems (None
    when there is no champion yet). The decision, its p-value and both figures become version
    tags; `metrics` (e.g. the test split's figures, reported only) too.
    """
    rule = rule or PromotionRule()
    all_metrics = dict(metrics or {})
    if comparison is not None:
        all_metrics[f"validation/{rule.metric}"] = comparison.challenger
    policy_version = register_version(policy_name, policy_uri, run_id, all_metrics)
    vm_version = register_version(value_model_name, value_model_uri, run_id, all_metrics,
                                  {"restrl.policy_version": policy_version})
    decision = replace(decide(comparison, rule), policy_version=policy_version,
                       value_model_version=vm_version)
    client = _client()
    client.set_model_version_tag(policy_name, policy_version, "restrl.value_model_version",
                                 vm_version)
    tags = {"restrl.decision": decision.reason, "restrl.promote": str(decision.promote)}
    for key in ("p_value", "champion_metric", "challenger_metric"):
        if getattr(decision, key) is not None:
            tags[f"restrl.{key}"] = repr(getattr(decision, key))
    for name, version in ((policy_name, policy_version), (value_model_name, vm_version)):
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        if decision.promote:
            promote(name, version, decision.reason, rule.metric)
    return decision
