"""What every task shares: the run context, the task runner, Prefect summaries.

Caching is the artifact store's (`restrl.artifacts.step`): a step whose artifact key exists
returns it without work, in any flow run, so the tasks keep no Prefect result cache of their
own (`NO_CACHE`): one cache, one key.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Prefect's temporary server would phone home at start and log an ERROR where there is no
# network; a user who wants telemetry sets the variable themselves. restrl's own log lines
# (what a step reused or resumed, warnings) go to the flow run's log; set before Prefect loads.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "restrl")

import logging  # noqa: E402

from prefect import get_run_logger  # noqa: E402
from prefect.artifacts import (  # noqa: E402 - after the environment above
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.runtime import flow_run  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from restrl import tracking  # noqa: E402
from restrl.artifacts import ArtifactRef, ArtifactStore, code_version  # noqa: E402
from restrl.artifacts.step import RunIds  # noqa: E402


@dataclass(frozen=True)
class RunContext:
    """Passed to every task: where artifacts go and which runs they belong to."""

    store_root: str
    mlflow_parent_run_id: str | None = None
    code: str = ""

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.store_root)

    def run_ids(self, mlflow_run_id: str | None = None) -> RunIds:
        return RunIds(mlflow_run_id=mlflow_run_id or self.mlflow_parent_run_id,
                      prefect_flow_run_id=current_flow_run_id())


DASK_ADDRESS_ENV = "RESTRL_DASK_ADDRESS"


def dask_address() -> str | None:
    return os.environ.get(DASK_ADDRESS_ENV) or None


def default_task_runner():  # noqa: ANN201 - a Prefect task runner
    """Shard tasks run on a Dask cluster when RESTRL_DASK_ADDRESS is set, else one at a time
    here: the sandbox already uses every core, and timeouts must measure programs, not load."""
    address = dask_address()
    if address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    return ThreadPoolTaskRunner(max_workers=1)


def make_context(store_root: str | None, mlflow_parent_run_id: str | None) -> RunContext:
    store = ArtifactStore(store_root)
    return RunContext(store.root, mlflow_parent_run_id, code_version())


def current_flow_run_id() -> str | None:
    run_id = flow_run.get_id()
    return str(run_id) if run_id else None


def step_logger(run_id: str) -> Callable[[int, dict[str, float]], None]:
    """Per-step training logs -> the MLflow run's metrics (`rewards/x/mean` -> `rewards_x_mean`)."""

    def log(step: int, logs: dict[str, float]) -> None:
        tracking.log_metrics(run_id, {k.replace("/", "_"): v for k, v in logs.items()}, step)

    return log


def artifact_key_name(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60]


def publish(ref: ArtifactRef, title: str, summary: dict[str, object] | None = None,
            mlflow_url: str | None = None) -> None:
    """A Prefect table of the step's figures and a link to the Parquet artifact."""
    if summary:
        rows = [{"metric": k, "value": round(v, 4) if isinstance(v, float) else v}
                for k, v in summary.items()]
        create_table_artifact(rows, key=artifact_key_name(f"{ref.kind}-summary"),
                              description=f"{title}: {ref.uri}")
    link_text = f"{ref.kind} ({ref.rows} rows)" if ref.rows is not None else ref.kind
    create_link_artifact(ref.uri, link_text=link_text, key=artifact_key_name(f"{ref.kind}-uri"),
                         description=title)
    if mlflow_url:
        create_markdown_artifact(f"MLflow run: [{mlflow_url}]({mlflow_url})",
                                 key=artifact_key_name(f"{ref.kind}-mlflow"))


# restrl's INFO lines (what a step reused or resumed) reach Prefect's handlers, which
# PREFECT_LOGGING_EXTRA_LOGGERS attaches; the logger's own level decides what passes.
logging.getLogger("restrl").setLevel(logging.INFO)

# One line per step with its figures. Its records reach the flow run's log through
# `announce`; `restrl demo` also prints them (and nothing else below a warning).
PROGRESS = logging.getLogger("restrl_flows.progress")


def announce(message: str) -> None:
    """A step's one-line result, in the flow run's log and in the demo's console."""
    get_run_logger().info(message)
    PROGRESS.info(message)


def publish_plot(path: Path, key: str, title: str, run_id: str | None) -> None:
    """A plot as a Prefect markdown artifact (the image inline) and an MLflow run artifact."""
    from restrl.evaluation.plots import markdown_image

    create_markdown_artifact(f"### {title}\n\n{markdown_image(path, title)}",
                             key=artifact_key_name(key), description=title)
    if run_id:
        tracking.log_artifact_file(run_id, path, "plots")
