"""`restrl verify`: verdicts in input order, clear one-line errors for unusable input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

FIXTURES = Path(__file__).parent / "fixtures" / "problems"
RESTRL = [sys.executable, "-m", "restrl.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RESTRL, *args], capture_output=True, text=True, timeout=300)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_verify_writes_one_verdict_per_row_in_input_order(tmp_path):
    completions = write_jsonl(tmp_path / "c.jsonl", [
        {"problem_id": "102", "program": "def add(a, b):\n    return a + b\n"},
        {"problem_id": 101, "program": "print(-1)\n"},
        {"problem_id": "101", "program": "a, b = map(int, input().split())\nprint(a + b)\n"},
    ])
    for out in (tmp_path / "v.parquet", tmp_path / "v.jsonl"):
        result = run("verify", "--domain", "apps", "--problems", str(FIXTURES / "apps_seed.jsonl"),
                     "--completions", str(completions), "--out", str(out), "--workers", "2")
        assert result.returncode == 0, result.stderr
        if out.suffix == ".parquet":
            rows = pq.read_table(out).to_pylist()
        else:
            rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [(r["row"], r["problem_id"]) for r in rows] == [(0, "102"), (1, "101"), (2, "101")]
        assert [r["reward"] for r in rows] == [1.0, 0.0, 1.0]
        assert [r["strict"] for r in rows] == [True, False, True]
        assert {r["isolation"] for r in rows} <= {"bwrap", "rlimits"}


def test_verify_humaneval_uses_the_packaged_data_when_given_the_file(tmp_path):
    completions = write_jsonl(tmp_path / "c.jsonl", [
        {"problem_id": "HumanEval/0", "program": "def has_close_elements(n, t):\n    return 1\n"},
    ])
    out = tmp_path / "v.jsonl"
    result = run("verify", "--domain", "humaneval", "--problems",
                 str(FIXTURES / "humaneval_small.jsonl.gz"), "--completions", str(completions),
                 "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["reward"] == 0.0


def test_verify_reports_unusable_input_in_one_line_with_a_nonzero_exit(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [{"problem_id": "101", "program": "print(3)"}])
    unknown = write_jsonl(tmp_path / "unknown.jsonl", [{"problem_id": "nope", "program": "x"}])
    malformed = write_jsonl(tmp_path / "bad.jsonl",
                            [{"problem_id": "101", "program": "print(3)"}, "{not json"])
    problems = str(FIXTURES / "apps_seed.jsonl")
    cases = [
        (["--problems", str(tmp_path / "missing.jsonl"), "--completions", str(good)],
         "missing.jsonl"),
        (["--problems", problems, "--completions", str(unknown)], "unknown problem_id 'nope'"),
        (["--problems", problems, "--completions", str(malformed)], "bad.jsonl:2"),
    ]
    for args, expected in cases:
        result = run("verify", "--domain", "apps", *args, "--out", str(tmp_path / "o.jsonl"))
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("restrl: error:") and expected in lines[0]
    assert not (tmp_path / "o.jsonl").exists()


def test_verify_sets_aside_malformed_problem_rows_and_judges_the_rest(tmp_path):
    completions = write_jsonl(tmp_path / "c.jsonl", [{"problem_id": "901", "program": "print(1)"}])
    out = tmp_path / "v.jsonl"
    result = run("verify", "--domain", "apps", "--problems",
                 str(FIXTURES / "malformed_apps.jsonl"), "--completions", str(completions),
                 "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "malformed_apps.jsonl:2" in result.stderr
    assert len(out.read_text().splitlines()) == 1


def test_cli_help_path_does_not_import_torch_or_the_sandbox():
    code = ("import sys, restrl_flows.cli\n"
            "heavy = [m for m in ('torch', 'transformers', 'pyarrow', 'restrl.sandbox', 'prefect') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert run("verify", "--help").returncode == 0


def test_verify_humaneval_defaults_to_the_packaged_problems(tmp_path):
    completions = write_jsonl(tmp_path / "c.jsonl", [
        {"problem_id": "HumanEval/0", "program": "def has_close_elements(n, t):\n    return 1\n"}])
    out = tmp_path / "v.jsonl"
    result = run("verify", "--domain", "humaneval", "--completions", str(completions),
                 "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["status"] == "failed"
    other = run("verify", "--domain", "apps", "--completions", str(completions), "--out", str(out))
    assert other.returncode == 2 and "--problems is needed for --domain apps" in other.stderr


def test_verify_starts_its_workers_before_parsing_and_only_for_verify(monkeypatch):
    from restrl import cli
    from restrl.sandbox import pool

    started = []
    monkeypatch.setattr(pool, "start_pool", lambda *args: started.append(args) or args)
    monkeypatch.setattr(cli, "_EARLY_POOLS", {})
    cli.start_verify_workers_early(["verify", "--domain", "apps", "--workers=2", "--out", "o"])
    cli.start_verify_workers_early(["verify", "--domain", "apps", "--workers", "two"])
    cli.start_verify_workers_early(["verify", "--help", "--domain", "apps"])
    cli.start_verify_workers_early(["run", "pipeline", "--domain", "apps"])
    assert started == [(2, "auto", ["apps"])]
    assert list(cli._EARLY_POOLS) == [("apps", 2, "auto")]


def test_verify_judges_right_when_set_overrides_the_early_workers(tmp_path):
    completions = write_jsonl(tmp_path / "c.jsonl", [
        {"problem_id": "101", "program": "a, b = map(int, input().split())\nprint(a + b)\n"}])
    out = tmp_path / "v.jsonl"
    result = run("verify", "--domain", "apps", "--problems", str(FIXTURES / "apps_seed.jsonl"),
                 "--completions", str(completions), "--out", str(out), "--workers", "2",
                 "--set", "workers=1")
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["reward"] == 1.0
