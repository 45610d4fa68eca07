"""restrl.problems: dataset readers, rejected rows, and the problems Parquet table."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import unittest
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from restrl.problems import (
    PROBLEMS_SCHEMA,
    Problem,
    ReadResult,
    RejectedRow,
    problems_to_table,
    read_problems,
    table_to_problems,
    write_problems_parquet,
)

FIXTURES = Path(__file__).parent / "fixtures" / "problems"

# Correct programs for the seed rows, which carry no reference of their own.
APPS_SEED_SOLUTIONS = {
    "101": "a, b = map(int, input().split())\nprint(a + b)\n",
    "102": "def add(a, b):\n    return a + b\n",
    "103": "input()\nprint(max(map(int, input().split())))\n",
}


def fixture(name: str) -> str:
    return str(FIXTURES / name)


def by_id(result: ReadResult) -> dict[str, Problem]:
    return {p.problem_id: p for p in result.problems}


def toy_problem() -> Problem:
    return Problem(
        problem_id="toy/0",
        domain="toy",
        prompt="def double(x):\n",
        init_code="def double(x):\n",
        tests="def check(candidate):\n    assert candidate(2) == 4\n",
        entry_point="double",
        io_mode="check",
        meta={"family": "double", "constant": 2, "reference": "def double(x):\n    return 2 * x\n"},
    )


def all_fixture_problems() -> list[Problem]:
    results = [
        read_problems(fixture("apps_seed.jsonl"), "apps"),
        read_problems(fixture("apps_original.jsonl"), "apps"),
        read_problems(fixture("bigcodebench.jsonl"), "bigcodebench"),
        read_problems(fixture("ds1000.jsonl"), "ds1000"),
        read_problems(fixture("humaneval_small.jsonl"), "humaneval"),
    ]
    return [p for r in results for p in r.problems] + [toy_problem()]


# --- APPS -------------------------------------------------------------------------------------


def test_apps_reader_loads_seed_rows_with_prompt_kept_and_tests_as_json() -> None:
    result = read_problems(fixture("apps_seed.jsonl"), "apps")

    assert result.rejected == []
    problems = by_id(result)
    assert list(problems) == ["101", "102", "103"]
    stdio, call, literal = problems["101"], problems["102"], problems["103"]

    assert (stdio.domain, stdio.io_mode, stdio.entry_point, stdio.init_code) == (
        "apps",
        "stdio",
        "",
        "",
    )
    assert stdio.prompt.endswith("Use Standard Input format")
    assert stdio.prompt.count("Use Standard Input format") == 1  # seed prompt is not re-formatted
    assert stdio.apps_tests() == {
        "inputs": ["1 2\n", "10 -3\n", "0 0\n"],
        "outputs": ["3\n", "7\n", "0\n"],
    }
    assert stdio.meta == {}

    assert (call.io_mode, call.entry_point, call.init_code) == ("call", "add", "def add(a, b):\n")
    assert call.apps_tests() == {
        "inputs": [[1, 2], [3, 4], [-5, 5]],
        "outputs": [3, 7, 0],
        "fn_name": "add",
    }

    # The third row's `test` is a Python literal (single quotes), read with ast.literal_eval.
    assert literal.io_mode == "stdio"
    assert literal.apps_tests()["outputs"] == ["5\n", "-4\n", "7\n"]
    json.loads(literal.tests)  # stored as JSON whatever the source spelling


def test_apps_reader_loads_original_rows_and_keeps_the_question_text() -> None:
    result = read_problems(fixture("apps_original.jsonl"), "apps")

    assert result.rejected == []
    problems = by_id(result)
    assert list(problems) == ["2001", "2002"]
    reverse, two_sum = problems["2001"], problems["2002"]

    assert reverse.io_mode == "stdio" and reverse.entry_point == "" and reverse.init_code == ""
    assert reverse.prompt.startswith("You are given a string s")
    assert reverse.prompt.endswith(
        "Print s reversed.\n\n-----Input-----\n\nThe only line contains "
        "s (1 <= |s| <= 100).\n\n-----Output-----\n\nPrint the reversed "
        "string.\n\n-----Examples-----\nInput\nabc\n\nOutput\ncba\n"
    )
    assert reverse.meta == {
        "difficulty": "introductory",
        "url": "https://example.com/problems/reverse-string",
        "reference": "s = input()\nprint(s[::-1])\n",  # the first of the solutions
    }

    assert two_sum.io_mode == "call" and two_sum.entry_point == "twoSum"
    assert "Call-Based format" not in two_sum.prompt  # the style words belong to the query
    assert two_sum.init_code == "class Solution:\n    def twoSum(self, nums, target):\n"
    assert two_sum.apps_tests()["outputs"] == [[[0, 1]], [[1, 2]], [[0, 1]]]
    assert two_sum.meta["difficulty"] == "interview"
    assert two_sum.meta["reference"].startswith("class Solution:")


def test_apps_reader_accepts_a_test_spec_given_as_a_dict(tmp_path: Path) -> None:
    row = {"id": "x1", "prompt": "p", "code": "", "test": {"inputs": ["1\n"], "outputs": ["1\n"]}}
    path = tmp_path / "apps.jsonl"
    path.write_text(json.dumps(row) + "\n")

    (problem,) = read_problems(path, "apps").problems

    assert problem.apps_tests() == {"inputs": ["1\n"], "outputs": ["1\n"]}


def test_apps_reader_sets_aside_malformed_rows_with_file_and_line() -> None:
    path = fixture("malformed_apps.jsonl")

    result = read_problems(path, "apps")

    assert [p.problem_id for p in result.problems] == ["901", "904"]
    assert [(r.file, r.line) for r in result.rejected] == [(path, 2), (path, 3), (path, 5)]
    bad_json, no_test, lengths = (r.reason for r in result.rejected)
    assert "invalid JSON" in bad_json
    assert "missing required field 'test'" in no_test
    assert "2 inputs but 1 outputs" in lengths


@pytest.mark.parametrize(
    ("test", "reason"),
    [
        ("{'inputs': [1, 2}", "neither JSON nor a Python literal"),
        ('{"inputs": "1\\n", "outputs": ["1\\n"]}', "must both be lists"),
        ('{"inputs": [], "outputs": []}', "no test cases"),
        ('{"inputs": ["1"], "outputs": ["1"], "fn_name": 3}', "'fn_name' must be a string"),
        ("{'inputs': [{1, 2}], 'outputs': [1]}", "not JSON data"),
        ("", "no tests"),
    ],
)
def test_apps_reader_rejects_unusable_test_specs(tmp_path: Path, test: str, reason: str) -> None:
    path = tmp_path / "apps.jsonl"
    path.write_text(json.dumps({"id": 1, "prompt": "p", "code": "", "test": test}) + "\n")

    result = read_problems(path, "apps")

    assert result.problems == []
    assert len(result.rejected) == 1 and reason in result.rejected[0].reason


def test_rejected_rows_are_logged_once_each_with_file_and_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = fixture("malformed_apps.jsonl")

    with caplog.at_level(logging.WARNING, logger="restrl.problems"):
        read_problems(path, "apps")

    messages = [r.getMessage() for r in caplog.records if r.name == "restrl.problems"]
    assert len(messages) == 3
    assert f"{path}:2:" in messages[0] and f"{path}:5:" in messages[2]


def test_duplicate_problem_id_keeps_the_first_row_and_rejects_the_later(tmp_path: Path) -> None:
    first, second = (
        {"id": 7, "prompt": prompt, "code": "", "test": {"inputs": ["1"], "outputs": ["1"]}}
        for prompt in ("first", "second")
    )
    path = tmp_path / "apps.jsonl"
    path.write_text(json.dumps(first) + "\n\n" + json.dumps(second) + "\n")

    result = read_problems(path, "apps")

    assert [p.prompt for p in result.problems] == ["first"]
    assert result.rejected == [
        RejectedRow(str(path), 3, "duplicate problem_id '7' (first at line 1)")
    ]


# --- BigCodeBench -----------------------------------------------------------------------------


def test_bigcodebench_reader_loads_tasks_as_unittest_problems() -> None:
    result = read_problems(fixture("bigcodebench.jsonl"), "bigcodebench")

    assert result.rejected == []
    problems = by_id(result)
    assert list(problems) == ["BigCodeBench/9000", "BigCodeBench/9001"]
    fsum = problems["BigCodeBench/9000"]
    assert fsum.io_mode == "unittest" and fsum.entry_point == "task_func"
    assert fsum.init_code == "import math\ndef task_func(numbers):\n"
    assert fsum.prompt.startswith("Compute the exactly rounded floating-point sum")
    assert "class TestCases(unittest.TestCase):" in fsum.tests
    assert fsum.tests.count("    def test_case_") == 4
    assert fsum.meta["libs"] == ["math"]  # parsed from the release's "['math']"
    assert fsum.meta["reference"] == fsum.meta["complete_prompt"] + (
        "    if not numbers:\n"
        '        raise ValueError("numbers must not be empty")\n'
        "    return math.fsum(numbers)\n"
    )
    assert problems["BigCodeBench/9001"].meta["libs"] == ["collections", "re"]


def test_bigcodebench_json_list_and_jsonl_give_the_same_problems() -> None:
    from_list = read_problems(fixture("bigcodebench.json"), "bigcodebench")
    from_lines = read_problems(fixture("bigcodebench.jsonl"), "bigcodebench")

    assert from_list.rejected == []
    assert from_list.problems == from_lines.problems


def test_bigcodebench_reader_sets_aside_a_task_without_tests() -> None:
    path = fixture("malformed_bigcodebench.jsonl")

    result = read_problems(path, "bigcodebench")

    assert [p.problem_id for p in result.problems] == ["BigCodeBench/9000", "BigCodeBench/9001"]
    assert result.rejected == [RejectedRow(path, 2, "missing required field 'test'")]


def test_json_list_rejections_name_the_item_and_its_real_line(tmp_path: Path) -> None:
    tasks = json.loads((FIXTURES / "bigcodebench.json").read_text())
    tasks[1]["libs"] = "not a list ["
    text = json.dumps(tasks, indent=2)
    path = tmp_path / "tasks.json"
    path.write_text(text)
    second_item_line = text[: text.index('"task_id": "BigCodeBench/9001"')].count("\n")

    result = read_problems(path, "bigcodebench")

    assert [p.problem_id for p in result.problems] == ["BigCodeBench/9000"]
    (rejected,) = result.rejected
    assert rejected.line == second_item_line  # the line of the item's opening brace
    assert rejected.reason.startswith("item 2: field 'libs' is not a list literal")


def test_json_list_syntax_error_keeps_earlier_items_and_rejects_the_rest(tmp_path: Path) -> None:
    tasks = json.loads((FIXTURES / "bigcodebench.json").read_text())
    text = json.dumps(tasks[:1], indent=2)[:-1] + ',\n  {"task_id": oops}\n]'
    path = tmp_path / "tasks.json"
    path.write_text(text)

    result = read_problems(path, "bigcodebench")

    assert [p.problem_id for p in result.problems] == ["BigCodeBench/9000"]
    (rejected,) = result.rejected
    assert rejected.line == text.count("\n")  # the line holding `oops`
    assert "invalid JSON" in rejected.reason and "rest of file skipped" in rejected.reason


# --- DS1000 -----------------------------------------------------------------------------------


def test_ds1000_reader_loads_code_context_as_tests_and_metadata_as_meta() -> None:
    result = read_problems(fixture("ds1000.jsonl"), "ds1000")

    assert result.rejected == []
    problems = by_id(result)
    assert list(problems) == ["9000", "9001"]
    accumulate, join = problems["9000"], problems["9001"]
    assert accumulate.io_mode == "ds1000" and accumulate.entry_point == ""
    assert accumulate.init_code == ""  # DS1000 rows carry no `code`
    assert accumulate.prompt.endswith("BEGIN SOLUTION\n<code>\n")
    assert "def test_execution(solution: str):" in accumulate.tests
    assert "def test_string(" not in accumulate.tests
    assert "def test_string(solution: str):" in join.tests
    assert accumulate.meta == {
        "problem_id": 9000,
        "library_problem_id": 0,
        "library": "Stdlib",
        "test_case_cnt": 2,
        "perturbation_type": "Origin",
        "perturbation_origin_id": 9000,
        "reference": "result = list(itertools.accumulate(numbers))\n",
    }


def test_ds1000_reader_uses_the_code_field_as_init_code(tmp_path: Path) -> None:
    row = json.loads((FIXTURES / "ds1000.jsonl").read_text().splitlines()[0])
    path = tmp_path / "ds1000.jsonl"
    path.write_text(json.dumps(dict(row, code="import itertools\n")) + "\n")

    (problem,) = read_problems(path, "ds1000").problems

    assert problem.init_code == "import itertools\n"


def test_ds1000_reader_sets_aside_a_row_whose_metadata_lacks_problem_id() -> None:
    path = fixture("malformed_ds1000.jsonl")

    result = read_problems(path, "ds1000")

    assert [p.problem_id for p in result.problems] == ["9000", "9001"]
    assert result.rejected == [
        RejectedRow(path, 2, "metadata: missing required field 'problem_id'")
    ]


# --- HumanEval --------------------------------------------------------------------------------


def test_humaneval_default_path_loads_all_164_packaged_problems() -> None:
    result = read_problems(None, "humaneval")

    assert result.rejected == []
    assert [p.problem_id for p in result.problems] == [f"HumanEval/{i}" for i in range(164)]
    add = by_id(result)["HumanEval/53"]
    assert add.io_mode == "check" and add.entry_point == "add"
    assert add.init_code == add.prompt and add.prompt.startswith("\n\ndef add(x: int, y: int):")
    assert "def check(candidate):" in add.tests
    assert add.meta == {"reference": add.prompt + "    return x + y\n"}


def test_humaneval_jsonl_and_gzip_give_the_same_problems_as_the_package() -> None:
    plain = read_problems(fixture("humaneval_small.jsonl"), "humaneval")
    gzipped = read_problems(fixture("humaneval_small.jsonl.gz"), "humaneval")
    packaged = by_id(read_problems(None, "humaneval"))

    assert plain.problems == gzipped.problems
    assert [p.problem_id for p in plain.problems] == ["HumanEval/0", "HumanEval/2", "HumanEval/53"]
    assert plain.problems == [packaged[p.problem_id] for p in plain.problems]


# --- Parquet ----------------------------------------------------------------------------------


def test_parquet_round_trip_is_exact_for_every_domain(tmp_path: Path) -> None:
    problems = all_fixture_problems()
    assert {p.domain for p in problems} == {"apps", "bigcodebench", "ds1000", "humaneval", "toy"}
    path = tmp_path / "problems.parquet"

    write_problems_parquet(problems, path)
    result = read_problems(path, None)

    assert result.rejected == []
    assert result.problems == problems
    assert table_to_problems(problems_to_table(problems)) == problems
    assert problems_to_table(problems).schema.equals(PROBLEMS_SCHEMA)


def test_parquet_read_for_a_domain_sets_aside_rows_of_other_domains(tmp_path: Path) -> None:
    problems = all_fixture_problems()
    path = write_problems_parquet(problems, tmp_path / "problems.parquet")

    result = read_problems(path, "toy")

    assert result.problems == [toy_problem()]
    assert len(result.rejected) == len(problems) - 1
    assert result.rejected[0] == RejectedRow(str(path), 1, "domain 'apps' is not 'toy'")


def test_parquet_reader_sets_aside_invalid_rows_by_row_number(tmp_path: Path) -> None:
    good = problems_to_table([toy_problem()]).to_pylist()[0]
    rows = [
        good,
        dict(good, problem_id="toy/1", io_mode="teleport"),
        dict(good, problem_id="toy/2", meta="[1, 2]"),
        dict(good, problem_id="toy/3", tests=None),
        good,
    ]
    path = tmp_path / "problems.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)

    result = read_problems(path, "toy")

    assert [p.problem_id for p in result.problems] == ["toy/0"]
    assert [r.line for r in result.rejected] == [2, 3, 4, 5]
    assert [r.reason.split(";")[0] for r in result.rejected] == [
        "unknown io_mode 'teleport'",  # Problem's own check
        "column 'meta' is not a JSON object",
        "column 'tests' is null",
        "duplicate problem_id 'toy/0' (first at line 1)",
    ]
    with pytest.raises(ValueError, match="not a valid problems table"):
        table_to_problems(pa.Table.from_pylist(rows))


def test_problems_table_refuses_meta_that_json_would_change() -> None:
    problem = Problem("p", "toy", "x", "", "t", meta={"pair": (1, 2)})

    with pytest.raises(ValueError, match="does not survive JSON"):
        problems_to_table([problem])


# --- dispatch and missing files -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "domain"),
    [
        ("nope.jsonl", "apps"),
        ("nope.json", "bigcodebench"),
        ("nope.jsonl", "ds1000"),
        ("nope.jsonl.gz", "humaneval"),
        ("nope.parquet", "toy"),
    ],
)
def test_missing_file_raises_file_not_found_naming_the_path(
    tmp_path: Path, name: str, domain: str
) -> None:
    path = tmp_path / name

    with pytest.raises(FileNotFoundError, match=str(path)):
        read_problems(path, domain)


def test_read_problems_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="toy problems are read from a .parquet file only"):
        read_problems(fixture("apps_seed.jsonl"), "toy")
    with pytest.raises(ValueError, match="unknown domain"):
        read_problems(fixture("apps_seed.jsonl"), "mbpp")
    with pytest.raises(ValueError, match="a path is needed"):
        read_problems(None, "apps")
    with pytest.raises(ValueError, match="a domain is needed"):
        read_problems(fixture("apps_seed.jsonl"), None)


def test_read_problems_accepts_the_seed_spelling_of_domains() -> None:
    assert read_problems(fixture("ds1000.jsonl"), "DS1000").problems == (
        read_problems(fixture("ds1000.jsonl"), "ds1000").problems
    )


# --- the fixtures themselves --------------------------------------------------------------------


def _run_stdin(program: str, stdin: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", program], input=stdin, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_fixture_apps_problems_are_solved_by_their_reference_programs() -> None:
    problems = by_id(read_problems(fixture("apps_seed.jsonl"), "apps"))
    problems |= by_id(read_problems(fixture("apps_original.jsonl"), "apps"))
    programs = dict(APPS_SEED_SOLUTIONS)
    programs |= {pid: p.meta["reference"] for pid, p in problems.items() if "reference" in p.meta}
    for pid, problem in problems.items():
        spec = problem.apps_tests()
        for case_in, case_out in zip(spec["inputs"], spec["outputs"], strict=True):
            if problem.io_mode == "stdio":
                assert _run_stdin(programs[pid], case_in) == case_out, pid
                continue
            env: dict = {}
            exec(programs[pid], env)
            fn = env["Solution"]().twoSum if "Solution" in env else env[problem.entry_point]
            got = fn(*case_in)
            assert got == case_out or [got] == case_out, pid  # APPS may wrap the output


def test_fixture_bigcodebench_references_pass_their_test_cases() -> None:
    for problem in read_problems(fixture("bigcodebench.jsonl"), "bigcodebench").problems:
        env: dict = {}
        exec(problem.meta["reference"] + "\n" + problem.tests, env)
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(env["TestCases"])
        outcome = unittest.TestResult()
        suite.run(outcome)
        assert outcome.testsRun == 4 and outcome.wasSuccessful(), problem.problem_id


def test_fixture_ds1000_references_pass_test_execution_and_test_string() -> None:
    for problem in read_problems(fixture("ds1000.jsonl"), "ds1000").problems:
        env: dict = {}
        exec(problem.tests, env)
        env["test_execution"](problem.meta["reference"])
        if "test_string" in env:
            env["test_string"](problem.meta["reference"])
            with pytest.raises(AssertionError):
                env["test_string"]('result = "-".join([w.upper() for w in words])\n')
        with pytest.raises(AssertionError):
            env["test_execution"]("result = None\n")


def test_fixture_humaneval_gzip_holds_the_same_bytes_as_the_jsonl() -> None:
    raw = gzip.decompress((FIXTURES / "humaneval_small.jsonl.gz").read_bytes())
    assert raw == (FIXTURES / "humaneval_small.jsonl").read_bytes()
