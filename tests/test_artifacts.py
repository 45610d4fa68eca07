"""ArtifactStore: atomic commits, sha256 checks, content-derived keys, lineage, S3 on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from restrl.artifacts import ArtifactCorrupted, ArtifactStore, artifact_key


def table(n: int = 3) -> pa.Table:
    return pa.table({"problem_id": [f"p{i}" for i in range(n)],
                     "reward": [i / n for i in range(n)]})


def test_table_round_trips_and_the_key_depends_only_on_what_produced_it(tmp_path):
    store = ArtifactStore(str(tmp_path))
    parent = store.put_table(table(2), "problems", {"domain": "toy", "n": 2})
    ref = store.put_table(table(3), "verdicts", {"timeout": 4}, [parent])
    assert ref.rows == 3 and ref.uri.startswith("file://") and ref.kind == "verdicts"
    assert store.read_table(ref).equals(table(3))
    key = artifact_key("verdicts", {"timeout": 4}, [parent])
    assert store.find("verdicts", key) == ref
    assert artifact_key("verdicts", {"timeout": 5}, [parent]) != key
    assert store.find("verdicts", artifact_key("verdicts", {"timeout": 5}, [parent])) is None


def test_an_artifact_without_its_manifest_does_not_exist(tmp_path):
    store = ArtifactStore(str(tmp_path))
    ref = store.put_table(table(), "completions", {"n": 1})
    key = ref.uri.rsplit("/", 1)[-1]
    (tmp_path / "completions" / key / "manifest.json").unlink()  # as if the writer died here
    assert store.find("completions", key) is None


def test_corrupted_table_is_detected_on_read(tmp_path):
    store = ArtifactStore(str(tmp_path))
    ref = store.put_table(table(), "completions", {"n": 1})
    data_file = tmp_path / "completions" / ref.uri.rsplit("/", 1)[-1] / "data.parquet"
    other = ArtifactStore(str(tmp_path / "other")).put_table(table(5), "x", {})
    data_file.write_bytes((tmp_path / "other" / "x" / other.uri.rsplit("/", 1)[-1]
                           / "data.parquet").read_bytes())
    with pytest.raises(ArtifactCorrupted, match="corrupted"):
        store.read_table(ref)


def test_model_directory_round_trips_and_corruption_is_detected(tmp_path):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"a": 1}')
    (model / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 100)
    store = ArtifactStore(str(tmp_path / "store"))
    ref = store.put_model(model, "policy", {"lr": 1e-5})
    local = store.model_path(ref)
    assert (local / "sub" / "weights.bin").read_bytes() == b"\x00\x01" * 100
    (local / "config.json").write_text('{"a": 2}')
    with pytest.raises(ArtifactCorrupted):
        store.model_path(ref)


def test_shards_commit_one_by_one_for_resuming(tmp_path):
    store = ArtifactStore(str(tmp_path))
    store.put_shard(table(1), "completions", "k1", 0)
    store.put_shard(table(2), "completions", "k1", 2)
    (tmp_path / "completions" / "k1" / "shards" / "00003.parquet.partial-xyz").write_bytes(b"x")
    assert store.committed_shards("completions", "k1") == [0, 2]
    assert store.read_shard("completions", "k1", 2).num_rows == 2


def test_lineage_command_prints_the_ancestry_tree(tmp_path):
    store = ArtifactStore(str(tmp_path))
    problems = store.put_table(table(2), "problems", {"domain": "toy"})
    completions = store.put_table(table(4), "completions", {"n": 2, "temperature": 0.7},
                                  [problems], run_ids={"mlflow_run_id": "abc123",
                                                       "prefect_flow_run_id": "flow-9"})
    out = subprocess.run([sys.executable, "-m", "restrl.cli", "lineage", completions.uri],
                         capture_output=True, text=True, check=True).stdout
    assert "completions" in out and "problems" in out and "temperature=0.7" in out
    assert "mlflow run abc123" in out and "prefect flow run flow-9" in out
    tree = json.loads(subprocess.run(
        [sys.executable, "-m", "restrl.cli", "lineage", completions.uri, "--json"],
        capture_output=True, text=True, check=True).stdout)
    assert tree["parents"][0]["kind"] == "problems"
    assert tree["parents"][0]["sha256"] == problems.sha256


def test_store_on_s3_loopback_endpoint(s3_bucket, tmp_path):
    store = ArtifactStore(f"s3://{s3_bucket}/artifacts")
    parent = store.put_table(table(2), "problems", {"domain": "toy"})
    ref = store.put_table(table(3), "verdicts", {"timeout": 4}, [parent])
    assert ref.uri.startswith(f"s3://{s3_bucket}/artifacts/verdicts/")
    assert store.read_table(ref).equals(table(3))
    assert store.lineage(ref.uri)["parents"][0]["uri"] == parent.uri
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    mref = store.put_model(model, "policy", {})
    assert (store.model_path(mref, cache_dir=tmp_path / "cache") / "config.json").exists()
    store.put_shard(table(1), "completions", "k", 1)
    assert store.committed_shards("completions", "k") == [1]
    assert Path(tmp_path).exists()


def test_lineage_shows_a_shared_ancestor_once_in_every_format(tmp_path):
    from restrl.artifacts.lineage import lineage_graph, render_lineage

    store = ArtifactStore(str(tmp_path))
    problems = store.put_table(table(2), "problems", {"domain": "toy"})
    completions = store.put_table(table(4), "completions", {"n": 2}, [problems])
    verdicts = store.put_table(table(4), "verdicts", {"timeout": 4}, [problems, completions])
    data = store.put_table(table(3), "grpo_data", {"mode": "grpo"},
                           [problems, completions, verdicts])
    tree = store.lineage(data.uri)
    graph = lineage_graph(tree)
    assert list(graph.nodes) == [data.uri, problems.uri, completions.uri, verdicts.uri]
    assert len(graph.edges) == 6
    text = render_lineage(tree, "tree")
    assert text.count(f"problems  {problems.uri}") == 3
    assert text.count("(see above)") == 3 and text.count("sha256") == 4
    import pydot

    (parsed,) = pydot.graph_from_dot_data(render_lineage(tree, "dot"))
    artifacts = [n for n in parsed.get_nodes() if n.get_name() != "node"]  # not the style line
    assert len(artifacts) == 4
    assert len(parsed.get_edges()) == 6
    mermaid = render_lineage(tree, "mermaid")
    assert mermaid.startswith("flowchart") and mermaid.count("-->") == 6
    out = subprocess.run([sys.executable, "-m", "restrl.cli", "lineage", data.uri,
                          "--format", "json"], capture_output=True, text=True, check=True).stdout
    assert [n["kind"] for n in json.loads(out)["nodes"]] == [
        "grpo_data", "problems", "completions", "verdicts"]
