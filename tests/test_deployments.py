"""prefect.yaml against a real `prefect server`: deploy --all, schedules, a worker-run flow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, prefect_cli, stop_group

pytestmark = pytest.mark.slow

DEPLOYMENTS = {"self-training/self-training", "value-model/value-model", "evaluate/evaluate",
               "pipeline/pipeline", "retrain/weekly-retrain"}
TINY_STAGE1 = {
    # T 1.0 and 8 problems: the tiny model answers a family alike at T 0.7, and GRPO keeps
    # only problems whose samples' rewards differ.
    "problems": [{"domain": "toy", "n": 8}], "eval_problems": None,
    "sampling": {"n": 4, "temperature": 1.0, "max_tokens": 32, "shard_problems": 8},
    "grpo": {"max_steps": 1, "num_generations": 4, "batch_size_per_device": 8,
             "max_completion_length": 32},
    "verification": {"limits": {"timeout": 2.0}, "workers": 1},
}


def _read_deployments(api: str) -> dict:
    import httpx

    response = httpx.post(f"{api}/deployments/filter", json={"limit": 50}, timeout=30)
    response.raise_for_status()
    flows = httpx.post(f"{api}/flows/filter", json={"limit": 50}, timeout=30).json()
    names = {f["id"]: f["name"] for f in flows}
    return {f"{names[d['flow_id']]}/{d['name']}": d for d in response.json()}


def test_deploy_all_registers_every_flow_with_its_schedule(deployed, prefect_server):
    deployments = _read_deployments(prefect_server["api"])
    assert set(deployments) == DEPLOYMENTS
    retrain = deployments["retrain/weekly-retrain"]
    assert [s["schedule"]["cron"] for s in retrain["schedules"]] == ["0 3 * * 1"]
    assert all(d["work_pool_name"] == "restrl-process" for d in deployments.values())
    schema = deployments["pipeline/pipeline"]["parameter_openapi_schema"]
    assert "params" in schema["properties"]  # typed parameters: the UI renders a form


def test_a_deployment_run_is_picked_up_by_a_worker_and_completes(deployed, prefect_server):
    import httpx

    env, work = deployed
    run = prefect_cli(["deployment", "run", "self-training/self-training",
                   "--params", json.dumps({"params": TINY_STAGE1})], env)
    assert run.returncode == 0, run.stderr + run.stdout
    worker = subprocess.Popen(
        [shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect",
         "worker", "start", "--pool", "restrl-process", "--type", "process"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    api = prefect_server["api"]
    state = None
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            runs = httpx.post(f"{api}/flow_runs/filter", json={
                "flow_runs": {"tags": {"all_": ["stage1"]}}, "limit": 5}, timeout=30).json()
            states = [r["state"]["type"] for r in runs if r.get("state")]
            if states and states[0] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                state = states[0]
                break
            time.sleep(2)
    finally:
        stop_group(worker, grace=3)  # a worker waits 30 s on SIGTERM or SIGINT; its run is done
    assert state == "COMPLETED"
    assert list((work / "artifacts" / "policy").glob("*/manifest.json"))
