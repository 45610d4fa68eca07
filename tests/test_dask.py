"""Verification shards fan out to a local Dask cluster through prefect-dask's DaskTaskRunner."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from restrl.artifacts import ArtifactStore
from restrl.artifacts.schemas import COMPLETIONS
from restrl.sandbox import Limits
from restrl.steps.problems import ProblemSource, load_problems, read_problems
from restrl.steps.verify import VerifyConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dask_cluster():
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    yield cluster
    cluster.close()


def test_verification_fans_out_to_a_local_dask_cluster(dask_cluster, tmp_path, monkeypatch):
    from distributed import Client, get_task_stream
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from restrl_tasks.common import default_task_runner, make_context
    from restrl_tasks.stage1 import verify

    monkeypatch.setenv("RESTRL_DASK_ADDRESS", dask_cluster.scheduler_address)
    monkeypatch.setenv("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(tmp_path / "results"))
    store = ArtifactStore(str(tmp_path / "store"))
    problems_ref, _ = load_problems(store, ProblemSource(n=6))
    problems = read_problems(store, problems_ref)
    rows = []
    for p in problems:  # a passing and a failing program per problem
        for idx, body in enumerate([p.meta["reference"][len(p.init_code):], "    return None\n"]):
            rows.append({"domain": p.domain, "problem_id": p.problem_id, "sample_idx": idx,
                         "prompt": "", "raw": body,
                         "code": body, "program": p.init_code + body, "hit_stop": True,
                         "prompt_tokens": 0, "completion_tokens": 0, "finish_reason": "stop"})
    completions_ref = store.put_table(pa.Table.from_pylist(rows, schema=COMPLETIONS),
                                      "completions", {"test": "dask"}, [problems_ref])
    config = VerifyConfig(limits=Limits(timeout=2.0), workers=1, shard_rows=3)

    runner = default_task_runner()
    assert type(runner).__name__ == "DaskTaskRunner"

    @flow(task_runner=runner)
    def verify_on_dask():
        ctx = make_context(store.root, None)
        return verify(ctx, problems_ref, completions_ref, config)

    with prefect_test_harness(server_startup_timeout=120), Client(
            dask_cluster.scheduler_address) as client, get_task_stream(client) as stream:
        ref = verify_on_dask()
    assert len(stream.data) >= 4  # one Dask task per shard (12 verdicts / 3 per shard)
    verdicts = store.read_table(ref).to_pylist()
    assert [v["reward"] for v in verdicts] == [1.0, 0.0] * 6
    assert os.environ["RESTRL_DASK_ADDRESS"] == dask_cluster.scheduler_address


def test_mcts_shards_fan_out_to_dask_and_match_a_local_search(dask_cluster, tmp_path,
                                                              monkeypatch):
    """Stage 2's search goes through the same shard plan as sampling and verification."""
    from distributed import Client, get_task_stream
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from restrl.search import MCTSConfig
    from restrl.steps.mcts import collect_mcts as collect_here
    from restrl.steps.models import GeneratorSpec
    from restrl_tasks.common import default_task_runner, make_context
    from restrl_tasks.stage2 import collect_mcts

    monkeypatch.setenv("RESTRL_DASK_ADDRESS", dask_cluster.scheduler_address)
    monkeypatch.setenv("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(tmp_path / "results"))
    store = ArtifactStore(str(tmp_path / "store"))
    problems_ref, _ = load_problems(store, ProblemSource(n=4, seed=1))
    config = MCTSConfig(iteration_limit=1, num_sample=2, max_tokens=24, shard_problems=2)
    verification = VerifyConfig(limits=Limits(timeout=2.0), workers=1)

    @flow(task_runner=default_task_runner())
    def search_on_dask():
        return collect_mcts(make_context(store.root, None), problems_ref, GeneratorSpec(),
                            config, verification)

    with prefect_test_harness(server_startup_timeout=120), Client(
            dask_cluster.scheduler_address) as client, get_task_stream(client) as stream:
        nodes, completions = search_on_dask()
    assert len(stream.data) >= 2  # one Dask task per shard of 2 problems
    local = ArtifactStore(str(tmp_path / "local"))
    local_problems, _ = load_problems(local, ProblemSource(n=4, seed=1))
    local_nodes, local_completions = collect_here(local, local_problems, GeneratorSpec(), config,
                                                  verification)
    assert store.read_table(nodes).equals(local.read_table(local_nodes))
    assert store.read_table(completions).equals(local.read_table(local_completions))
