"""The toy domain: families, deterministic generation, disjoint splits, verifiable references."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import Counter

import pytest

from restrl.problems import read_problems
from restrl.prompts import format_prompt, full_program, postprocess
from restrl.sandbox import verify
from restrl.toy import (
    FAMILIES,
    SPLITS,
    reference_body,
    split_combinations,
    toy_problems,
    write_toy_problems,
)
from restrl.toy.tasks import combo_key


def _keys(problems) -> set[str]:
    return {combo_key(p.meta["family"], p.meta["constants"]) for p in problems}


def test_import_is_light() -> None:
    code = "import sys, restrl.toy; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_enough_compositional_families() -> None:
    assert 10 <= len(FAMILIES) <= 20
    assert len({f.name for f in FAMILIES}) == len(FAMILIES)
    for family in FAMILIES:
        combos = family.combinations()
        assert len(combos) >= 10, family.name
        # Several steps: every reference body has at least two statements.
        assert family.reference_body(combos[0]).count("\n") >= 2, family.name


def test_generation_is_deterministic_for_a_seed() -> None:
    assert toy_problems("train", 40, seed=3) == toy_problems("train", 40, seed=3)
    assert toy_problems("test", 20, seed=3) == toy_problems("test", 20, seed=3)
    assert toy_problems("train", 40, seed=3) != toy_problems("train", 40, seed=4)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_train_and_test_are_disjoint_combinations(seed: int) -> None:
    train = toy_problems("train", 600, seed=seed)
    test = toy_problems("test", 200, seed=seed)
    assert not _keys(train) & _keys(test)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert not {p.problem_id for p in train} & {p.problem_id for p in test}


def test_splits_partition_every_family_and_held_out_constants_occur_in_train() -> None:
    for family in FAMILIES:
        keys = {split: {combo_key(family.name, c) for c in split_combinations(family, split)}
                for split in SPLITS}
        all_keys = {combo_key(family.name, c) for c in family.combinations()}
        assert keys["train"] | keys["validation"] | keys["test"] == all_keys
        assert sum(len(k) for k in keys.values()) == len(all_keys)  # disjoint
        assert 0 < len(keys["validation"]) < len(keys["test"]) < len(keys["train"])
        # Held-out combinations, not held-out constants: every held-out value is seen in train.
        train = split_combinations(family, "train")
        seen = {(name, json.dumps(value)) for c in train for name, value in c.items()}
        for combo in split_combinations(family, "validation") + split_combinations(family,
                                                                                  "test"):
            assert {(n, json.dumps(v)) for n, v in combo.items()} <= seen, (family.name, combo)


def test_n_none_gives_each_combination_once_and_n_balances_families() -> None:
    every = toy_problems("test", None)
    assert len(every) == sum(len(split_combinations(f, "test")) for f in FAMILIES)
    assert len(_keys(every)) == len(every)
    some = toy_problems("train", 3 * len(FAMILIES))
    assert set(Counter(p.meta["family"] for p in some).values()) == {3}
    assert len({p.problem_id for p in some}) == len(some)
    with pytest.raises(ValueError):
        toy_problems("valid", 3)


def test_problem_shape() -> None:
    for problem in toy_problems("train", len(FAMILIES)):
        family = problem.meta["family"]
        assert problem.domain == "toy" and problem.io_mode == "check"
        assert problem.problem_id.startswith(f"toy/{family}/train-")
        assert problem.entry_point == family
        assert problem.init_code.startswith(f"def {family}(") and problem.init_code.endswith(":\n")
        assert f"`{family}(" in problem.prompt
        assert problem.meta["split"] == "train"
        assert problem.meta["reference"] == problem.init_code + reference_body(problem)
        tree = ast.parse(problem.tests)
        check = tree.body[0]
        assert isinstance(check, ast.FunctionDef) and check.name == "check"
        assert 4 <= sum(isinstance(s, ast.Assert) for s in check.body) <= 6
        ast.parse(problem.meta["reference"])


def test_references_pass_and_wrong_programs_fail_in_the_sandbox() -> None:
    problems = toy_problems("train", 2 * len(FAMILIES), seed=5) + toy_problems(
        "test", len(FAMILIES), seed=5)
    references = [p.meta["reference"] for p in problems]
    nones = [p.init_code + "    return None\n" for p in problems]
    # Right family, another combination's constants: the tests must tell them apart.
    by_family: dict[str, list] = {}
    for p in toy_problems("train", None):
        by_family.setdefault(p.meta["family"], []).append(p)
    others = []
    for p in problems:
        other = next(q for q in by_family[p.meta["family"]]
                     if q.meta["constants"] != p.meta["constants"])
        others.append(other.meta["reference"])
    verdicts = verify(problems * 3, references + nones + others)
    n = len(problems)
    assert [v.status for v in verdicts[:n]] == ["passed"] * n
    assert all(not v.strict for v in verdicts[n:2 * n])
    wrong_constants_passed = sum(v.strict for v in verdicts[2 * n:])
    assert wrong_constants_passed <= n // 10


def test_reference_reply_round_trips_through_the_prompt_helpers() -> None:
    problem = toy_problems("test", 1)[0]
    prompt = format_prompt(problem, None)
    assert prompt.endswith("```python\n" + problem.init_code)
    reply = reference_body(problem) + "```\nextra"
    code, hit = postprocess(reply, "toy")
    assert hit and full_program(problem, code) == problem.meta["reference"].rstrip()


@pytest.mark.parametrize("split", SPLITS)
def test_write_toy_problems_reads_back_as_the_toy_domain(tmp_path, split: str) -> None:
    path = write_toy_problems(tmp_path / f"{split}.parquet", split, 30, seed=2)
    result = read_problems(path, "toy")
    assert result.rejected == []
    assert result.problems == toy_problems(split, 30, seed=2)


def test_toy_sampling_constructors_hold_the_toy_preset_values() -> None:
    from restrl.sampling import SamplingConfig

    toy, toy_eval = SamplingConfig.toy(), SamplingConfig.toy_eval()
    assert (toy.n, toy.temperature, toy.max_tokens, toy.problems_per_call,
            toy.shard_problems) == (8, 1.0, 96, 16, 16)
    assert (toy_eval.n, toy_eval.temperature, toy_eval.max_tokens) == (4, 0.7, 96)
    assert (toy.top_p, toy.seed) == (SamplingConfig().top_p, SamplingConfig().seed)


def test_sampling_config_documents_every_field_and_refuses_unknown_keys() -> None:
    from restrl.configs import undocumented
    from restrl.sampling import SamplingConfig

    assert undocumented(SamplingConfig) == []
    with pytest.raises(ValueError, match="samples"):
        SamplingConfig(samples=4)  # type: ignore[call-arg]
