"""MLflow helpers: one parent run per flow run, nested runs per training/evaluation task.

MLflow's active run is thread-local and Prefect runs tasks in worker threads, so everything here
takes explicit run ids; `activate(run_id)` makes a run active in the current thread for code that
logs implicitly (transformers' MLflow callback).
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///.restrl/mlflow.db"
DEFAULT_EXPERIMENT = "restrl"


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else a SQLite file under .restrl (made absolute)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    path = Path(".restrl/mlflow.db").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return _default_uri()


def _default_uri() -> str:
    return f"sqlite:///{Path('.restrl/mlflow.db').resolve()}"


def _client():  # noqa: ANN202
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def default_artifact_location(name: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside its SQLite database
    (<database folder>/mlruns/<name>, .restrl/mlruns/<name> by default) rather than MLflow's
    ./mlruns in the working directory; None (the server's choice) for any other tracking URI."""
    uri = tracking_uri()  # mlflow.set_tracking_uri also sets the variable
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).resolve().parent.joinpath(
        "mlruns", name).as_uri()


def experiment_id(name: str = DEFAULT_EXPERIMENT) -> str:
    client = _client()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=default_artifact_location(name))
    except Exception:  # noqa: BLE001 - another process created it first
        return client.get_experiment_by_name(name).experiment_id


def start_run(name: str, params: Mapping[str, Any] | None = None,
              parent_run_id: str | None = None, tags: Mapping[str, str] | None = None,
              experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Create a run (nested under `parent_run_id` when given) and return its id."""
    client = _client()
    all_tags = dict(tags or {})
    all_tags["mlflow.runName"] = name
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id(experiment), tags=all_tags, run_name=name)
    if params:
        log_params(run.info.run_id, params)
    return run.info.run_id


@contextlib.contextmanager
def run(name: str, params: Mapping[str, Any] | None = None, parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        experiment: str = DEFAULT_EXPERIMENT) -> Iterator[str]:
    """A run that ends FINISHED, or FAILED when the block raises; yields its id."""
    run_id = start_run(name, params, parent_run_id, tags, experiment)
    try:
        yield run_id
    except BaseException:
        end_run(run_id, "FAILED")
        raise
    end_run(run_id)


def log_params(run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    client = _client()
    existing = client.get_run(run_id).data.params
    items = [Param(str(k), str(v)[:6000]) for k, v in params.items() if str(k) not in existing]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start:start + 100])


def metric_name(key: str) -> str:
    """MLflow accepts alphanumerics and `_-. :/` only: `pass@1` becomes `pass_at_1`."""
    key = key.replace("@", "_at_")
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", key)


def log_metrics(run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(metric_name(k), float(v), now, step or 0)
             for k, v in metrics.items() if v is not None]
    if items:
        _client().log_batch(run_id, metrics=items)


def set_tags(run_id: str, tags: Mapping[str, str]) -> None:
    client = _client()
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value))


def end_run(run_id: str, status: str = "FINISHED") -> None:
    _client().set_terminated(run_id, status)


def log_input(run_id: str, uri: str, sha256: str, name: str, context: str = "training") -> None:
    """Record an input artifact on the run, with our sha256 as the dataset digest."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "can be interpreted in multiple ways" for file://
        dataset = MetaDataset(source=resolve_dataset_source(uri), name=name, digest=sha256[:36])
    tag = InputTag(key="mlflow.data.context", value=context)
    _client().log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), [tag])])


def log_model_reference(run_id: str, name: str, artifact_uri: str,
                        metrics: Mapping[str, float] | None = None,
                        params: Mapping[str, Any] | None = None) -> str:
    """An MLflow 3 logged model for a checkpoint that lives in our artifact store: linked to
    `run_id`, with its metrics and parameters, and the store URI as tag `restrl.artifact_uri`
    (no second copy of the weights). Returns the model id."""
    client = _client()
    experiment = client.get_run(run_id).info.experiment_id
    model = client.create_logged_model(
        experiment, name=name, source_run_id=run_id, model_type=name,
        tags={"restrl.artifact_uri": artifact_uri},
        params={k: str(v)[:6000] for k, v in (params or {}).items()})
    for key, value in (metrics or {}).items():
        client.log_metric(run_id, metric_name(key), float(value), model_id=model.model_id)
    client.finalize_logged_model(model.model_id, "READY")
    return model.model_id


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    """`text` as the run's artifact `artifact_file` (e.g. "lineage/outputs.mmd")."""
    _client().log_text(run_id, text, artifact_file)


def log_artifact_file(run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    _client().log_artifact(run_id, str(path), artifact_path)


def metric_history(run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(_client().get_metric_history(run_id, key),
                                    key=lambda m: m.step)]


@contextlib.contextmanager
def activate(run_id: str) -> Iterator[None]:
    """Make `run_id` MLflow's active run in this thread (for libraries that log implicitly)."""
    import mlflow

    _client()
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield
        return
    with mlflow.start_run(run_id=run_id, nested=active is not None):
        yield
