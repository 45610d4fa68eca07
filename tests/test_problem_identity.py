"""A problem is known by (domain, problem id): several problem sets train as one (the seed's
`--domain code` = APPS + BigCodeBench + DS1000) and every completion meets its own tests."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from restrl.artifacts import ArtifactStore
from restrl.artifacts.schemas import COMPLETIONS
from restrl.problems.model import index_problems
from restrl.prompts import closing_stop
from restrl.rest import RestDataConfig
from restrl.steps.problems import ProblemSource, load_problems, merge_problems, read_problems
from restrl.steps.rest_data import build_rest_data
from restrl.steps.verify import VerifyConfig, verify

COLLIDE = Path(__file__).parent / "fixtures" / "collide"
DOMAINS = ("apps", "bigcodebench", "ds1000")


def correct_program(problem) -> str:
    """A correct full program for a fixture problem: init_code + its reference body."""
    reference = problem.meta["reference"]
    if problem.domain == "bigcodebench":  # reference = complete_prompt + canonical_solution
        reference = reference[len(problem.meta["complete_prompt"]):]
    return problem.init_code + reference


def load_sets(store: ArtifactStore):
    refs = [load_problems(store, ProblemSource(domain=d, path=str(COLLIDE / f"{d}.jsonl"),
                                                      n=None))[0] for d in DOMAINS]
    return refs, merge_problems(store, refs)


def test_problem_sets_merge_into_one_artifact_whose_lineage_lists_each_set(tmp_path):
    store = ArtifactStore(str(tmp_path))
    refs, merged = load_sets(store)
    problems = read_problems(store, merged)
    assert [(p.domain, p.problem_id) for p in problems] == [(d, "7") for d in DOMAINS]
    parents = store.lineage(merged.uri)["parents"]
    assert sorted(p["uri"] for p in parents) == sorted(r.uri for r in refs)
    assert merge_problems(store, refs) == merged  # cached
    assert merge_problems(store, refs[:1]) == refs[0]  # one set is used as it is


def test_merging_two_sets_that_share_a_domain_and_id_is_an_error(tmp_path):
    store = ArtifactStore(str(tmp_path))
    apps = str(COLLIDE / "apps.jsonl")
    first, _ = load_problems(store, ProblemSource(domain="apps", path=apps, n=None))
    copy = tmp_path / "apps-copy.jsonl"
    row = json.loads(Path(apps).read_text())
    copy.write_text(json.dumps({**row, "question": row["question"] + "\n(again)"}) + "\n")
    second, _ = load_problems(store, ProblemSource(domain="apps", path=str(copy), n=None))
    with pytest.raises(ValueError, match="apps/7 appears twice"):
        merge_problems(store, [first, second])


def test_toy_problem_ids_differ_across_seeds():
    from restrl.toy import toy_problems

    ids = {p.problem_id for p in toy_problems("train", 6, seed=0)}
    assert not ids & {p.problem_id for p in toy_problems("train", 6, seed=1)}


def _completions(problems) -> pa.Table:
    """Per problem: sample 0 its own correct program, sample 1 the next domain's program."""
    rows = []
    for i, problem in enumerate(problems):
        other = problems[(i + 1) % len(problems)]
        for idx, program in enumerate((correct_program(problem), correct_program(other))):
            code = program[len(problem.init_code):]
            rows.append({"domain": problem.domain, "problem_id": problem.problem_id,
                         "sample_idx": idx, "prompt": "", "raw": code, "code": code,
                         "program": program, "hit_stop": True, "prompt_tokens": 0,
                         "completion_tokens": 0, "finish_reason": "stop"})
    return pa.Table.from_pylist(rows, schema=COMPLETIONS)


@pytest.mark.slow
def test_multi_domain_stage1_rewards_each_completion_against_its_own_problem(tmp_path):
    store = ArtifactStore(str(tmp_path))
    _, merged = load_sets(store)
    problems = read_problems(store, merged)
    completions = store.put_table(_completions(problems), "completions", {"test": 1}, [merged])
    verdicts = verify(store, merged, completions, VerifyConfig(workers=2))
    rewards = {(r["domain"], r["problem_id"], r["sample_idx"]): r["reward"]
               for r in store.read_table(verdicts).to_pylist()}
    assert rewards == {(d, "7", i): float(i == 0) for d in DOMAINS for i in (0, 1)}

    data, stats = build_rest_data(store, merged, completions, verdicts,
                                         RestDataConfig(n_sample=1))
    rows = store.read_table(data).to_pylist()
    assert {(r["domain"], r["problem_id"]) for r in rows} == {(d, "7") for d in DOMAINS}
    assert stats["problems_kept"] == 3

    # The GRPO reward of each row's own solution is 1 against its own problem's tests only.
    from restrl.sandbox import Verifier
    from restrl.training.grpo import GRPOTrainConfig, make_reward_function

    base_rows = [r for r in rows if r["source"] == "base"]
    by_key = index_problems(problems)
    with Verifier(2, domains=DOMAINS) as verifier:
        reward = make_reward_function(by_key, verifier, GRPOTrainConfig())
        own = []
        for row in base_rows:
            problem = by_key[row["domain"], row["problem_id"]]
            own.append(correct_program(problem)[len(row["partial_state"]):]
                       + closing_stop(problem))
        scores = reward(prompts=[r["prompt"] for r in base_rows], completions=own,
                        problem_id=[r["problem_id"] for r in base_rows],
                        domain=[r["domain"] for r in base_rows],
                        partial_state=[r["partial_state"] for r in base_rows])
    assert [round(s, 6) for s in scores] == [1.001] * 3


class RecordingGenerator:
    """Answers every prompt with a fixed text and records each call's prompts and stops."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple[str, ...]]] = []

    def generate(self, prompts, config):
        from restrl.generation import GenerationResult, Sample

        self.calls.append((len(prompts), tuple(config.stop)))
        return GenerationResult([[Sample("x = 1\n", 3, "stop")] * config.n for _ in prompts])


def test_sampling_a_mixed_batch_makes_one_call_per_stop_set(tmp_path):
    from restrl.prompts import stop_strings
    from restrl.sampling import SamplingConfig, sample_problems

    store = ArtifactStore(str(tmp_path))
    _, merged = load_sets(store)
    problems = read_problems(store, merged)
    generator = RecordingGenerator()
    rows = sample_problems(problems, generator, None, SamplingConfig(n=2))
    assert sorted(generator.calls) == sorted([(2, tuple(stop_strings("apps"))),
                                              (1, tuple(stop_strings("ds1000")))])
    assert [(r["domain"], r["sample_idx"]) for r in rows] == [
        (d, i) for d in DOMAINS for i in (0, 1)]
