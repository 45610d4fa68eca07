"""The value-data step: MCTS rows by default, Stage 1's verified samples on request."""

from __future__ import annotations

import pyarrow as pa
import pytest

from restrl.artifacts import ArtifactStore
from restrl.artifacts.schemas import COMPLETIONS, VERDICTS
from restrl.search import trees_to_tables
from restrl.steps.problems import ProblemSource, load_problems, read_problems
from restrl.steps.value_data import ValueDataConfig, VerifiedSamples, build_value_data


@pytest.fixture
def inputs(tmp_path):
    store = ArtifactStore(str(tmp_path))
    problems, _ = load_problems(store, ProblemSource(n=2))
    nodes, completions = trees_to_tables([])
    search = [store.put_table(t, kind, {"t": 1}, [problems])
              for t, kind in ((nodes, "mcts_nodes"), (completions, "mcts_completions"))]
    rows, verdicts = [], []
    for i, p in enumerate(read_problems(store, problems)):
        rows.append({"domain": p.domain, "problem_id": p.problem_id, "sample_idx": 0,
                     "prompt": "", "raw": "", "code": "", "program": f"# program {i}",
                     "hit_stop": True, "prompt_tokens": 1, "completion_tokens": 1,
                     "finish_reason": "stop"})
        verdicts.append({"row": i, "domain": p.domain, "problem_id": p.problem_id,
                         "sample_idx": 0, "reward": float(i), "strict": bool(i),
                         "status": "passed" if i else "failed", "tests_passed": i, "tests_total": 1,
                         "error": "", "seconds": 0.0, "isolation": "none"})
    sampled = store.put_table(pa.Table.from_pylist(rows, schema=COMPLETIONS), "completions",
                              {"t": 1}, [problems])
    judged = store.put_table(pa.Table.from_pylist(verdicts, schema=VERDICTS), "verdicts",
                             {"t": 1}, [problems, sampled])
    return store, problems, search, VerifiedSamples(problems, sampled, judged)


def test_stage1_samples_become_terminal_rows_with_their_verified_reward(inputs):
    store, problems, (nodes, completions), samples = inputs
    ref, stats = build_value_data(store, problems, nodes, completions,
                                  ValueDataConfig(stage1_samples=True), samples)
    rows = store.read_table(ref).to_pylist()
    assert [(r["answer"], r["reward"], r["source"]) for r in rows] == [
        ("# program 0", 0.0, "sample"), ("# program 1", 1.0, "sample")]
    assert rows[0]["prompt"] == read_problems(store, problems)[0].prompt
    assert stats["rows_sample"] == 2.0
    parents = {p["kind"] for p in store.lineage(ref.uri)["parents"]}
    assert {"verdicts", "completions", "mcts_nodes"} <= parents


def test_by_default_the_samples_are_not_used_as_in_the_original(inputs):
    store, problems, (nodes, completions), samples = inputs
    ref, stats = build_value_data(store, problems, nodes, completions, ValueDataConfig(),
                                  samples)
    assert store.read_table(ref).num_rows == 0 and stats["rows_sample"] == 0.0
    assert build_value_data(store, problems, nodes, completions)[0] == ref  # same artifact


def test_asking_for_samples_without_giving_them_is_an_error(inputs):
    store, problems, (nodes, completions), _ = inputs
    with pytest.raises(ValueError, match="stage1_samples"):
        build_value_data(store, problems, nodes, completions,
                         ValueDataConfig(stage1_samples=True))
