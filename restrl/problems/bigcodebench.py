"""BigCodeBench reader: a JSON list or JSONL of tasks in the released dataset's shape.

The model gets `instruct_prompt` and continues from `code_prompt`; the tests are the task's
`class TestCases(unittest.TestCase)` code, run against `entry_point` (`task_func`).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from restrl.problems._rows import RowError, read_json_rows, require, require_str
from restrl.problems.model import Problem, ReadResult


def read_bigcodebench(path: str | Path) -> ReadResult:
    """Read BigCodeBench tasks from a `.json` list or a `.jsonl` file (optionally `.gz`)."""
    return read_json_rows(path, parse_bigcodebench_row)


def parse_bigcodebench_row(row: dict[str, Any]) -> Problem:
    complete_prompt = require_str(row, "complete_prompt")
    return Problem(
        problem_id=require_str(row, "task_id"),
        domain="bigcodebench",
        prompt=require_str(row, "instruct_prompt"),
        init_code=require_str(row, "code_prompt"),
        tests=require_str(row, "test"),
        entry_point=require_str(row, "entry_point"),
        io_mode="unittest",
        meta={
            "libs": _libs(require(row, "libs")),
            "complete_prompt": complete_prompt,
            "reference": complete_prompt + require_str(row, "canonical_solution"),
        },
    )


def _libs(value: Any) -> list[str]:
    """The task's libraries; the Hugging Face release stores the list as its Python repr."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError) as err:
            raise RowError(f"field 'libs' is not a list literal ({err})") from err
    if not isinstance(value, (list, tuple)) or not all(isinstance(lib, str) for lib in value):
        raise RowError("field 'libs' must be a list of library names")
    return list(value)
