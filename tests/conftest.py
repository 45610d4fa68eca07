"""Shared fixtures: real servers on loopback (moto's standalone S3), started once per session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM a server's process group; SIGKILL it if it has not exited after `grace` s."""
    os.killpg(proc.pid, 15)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(grace)


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error status: the server is up
                return
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


def run_as_ordinary_user(script: str, cwd: Path, timeout: float = 180,
                         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -c script` as uid 65534 (nobody), as restrl runs for a user who is not root.

    Skips unless this runs as root with setpriv. Where the Python runtime lies under a
    directory other users cannot traverse, CI opens it for traversal (o+x, no listing) for
    the run and restores it after; elsewhere the test skips.
    """
    import stat

    from restrl.sandbox.isolation import _closed_ancestor, _runtime_paths

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to switch to an ordinary user) and setpriv")
    closed = sorted({a for p in _runtime_paths() if (a := _closed_ancestor(p))})
    if closed and not os.environ.get("CI"):
        pytest.skip(f"the Python runtime is under {closed}, unreadable to other users; CI "
                    "opens it for traversal (o+x) for this test")
    modes = {path: os.stat(path).st_mode for path in closed}
    try:
        for path, mode in modes.items():
            os.chmod(path, stat.S_IMODE(mode) | stat.S_IXOTH)
        return subprocess.run(
            ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
             sys.executable, "-c", script],
            capture_output=True, text=True, timeout=timeout, cwd=cwd,
            env={**os.environ, "HOME": str(cwd), **(env or {})})
    finally:
        for path, mode in modes.items():
            os.chmod(path, stat.S_IMODE(mode))


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's standalone S3 server on loopback, as s3fs's own test suite runs it."""
    port = free_port()
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch):
    """A fresh bucket on the loopback S3 server, with the AWS variables s3fs reads set."""
    import uuid

    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    name = f"restrl-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    yield name
    os.environ.pop("RESTRL_S3_ENDPOINT_URL", None)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on loopback (SQLite backend, local artifact store)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    proc = subprocess.Popen(
        [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", timeout=120)
        yield url
    finally:
        stop_group(proc)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server` on loopback with its own SQLite database; yields the API URL."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home),
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "true",
           "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}
    env.pop("PREFECT_API_URL", None)
    exe = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    proc = subprocess.Popen([exe, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/api/health", timeout=180)
        yield {"url": url, "api": url + "/api", "home": str(home)}
    finally:
        stop_group(proc)


REPO = Path(__file__).resolve().parents[1]


def store_base_grpo_data(store, problems: int = 2):
    """A toy problems artifact and a grpo_data artifact of its base rows (what `restrl train
    grpo` reads), both in `store`; returns (problems_ref, data_ref)."""
    import pyarrow as pa
    from transformers import AutoTokenizer

    from restrl.artifacts.schemas import GRPO_DATA
    from restrl.prompts import format_prompt
    from restrl.steps.problems import ProblemSource, load_problems, read_problems
    from restrl.toy.tiny_model import tiny_model_path

    problems_ref, _ = load_problems(store, ProblemSource(n=problems))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    rows = [{"problem_id": p.problem_id, "domain": p.domain,
             "prompt": format_prompt(p, tokenizer), "init_state": p.init_code,
             "partial_state": p.init_code, "prefix_lines": 0, "source": "base"}
            for p in read_problems(store, problems_ref)]
    data = store.put_table(pa.Table.from_pylist(rows, schema=GRPO_DATA), "grpo_data", {"t": 1},
                           [problems_ref])
    return problems_ref, data


def prefect_cli(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the `prefect` command of this environment from the repository root."""
    exe = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    return subprocess.run([exe, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def deployed(prefect_server, tmp_path_factory):
    """prefect.yaml's deployments registered on the loopback server; yields (env, work dir).

    `env` points flows run by a worker at artifacts, MLflow and results under the work dir.
    """
    work = tmp_path_factory.mktemp("deployed")
    env = {**os.environ, "PREFECT_API_URL": prefect_server["api"], "RESTRL_HOME": str(REPO),
           "PREFECT_HOME": prefect_server["home"],
           "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "RESTRL_ARTIFACTS": str(work / "artifacts"),
           "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(work / "results")}
    created = prefect_cli(["work-pool", "create", "restrl-process", "--type", "process"], env)
    assert created.returncode == 0, created.stderr + created.stdout
    deploy = prefect_cli(["--no-prompt", "deploy", "--all"], env)
    assert deploy.returncode == 0, deploy.stderr + deploy.stdout
    return env, work
