"""DS1000 reader: JSONL rows with `prompt`, `reference_code`, `code_context`, `metadata`.

`code_context` is the test program: it defines `test_execution(solution)` (and sometimes
`test_string(solution)`), which splices the solution into `exec_context` at `[insert]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from restrl.problems._rows import (
    RowError,
    optional_str,
    read_json_rows,
    require,
    require_id,
    require_str,
)
from restrl.problems.model import Problem, ReadResult


def read_ds1000(path: str | Path) -> ReadResult:
    """Read DS1000 problems from a JSONL file (optionally `.gz`)."""
    return read_json_rows(path, parse_ds1000_row)


def parse_ds1000_row(row: dict[str, Any]) -> Problem:
    metadata = require(row, "metadata")
    if not isinstance(metadata, dict):
        raise RowError(f"field 'metadata' must be an object, got {type(metadata).__name__}")
    try:
        problem_id = require_id(metadata, "problem_id")
    except RowError as err:
        raise RowError(f"metadata: {err}") from err
    reference = require_str(row, "reference_code")
    return Problem(
        problem_id=problem_id,
        domain="ds1000",
        prompt=require_str(row, "prompt"),
        init_code=optional_str(row, "code"),
        tests=require_str(row, "code_context"),
        entry_point="",
        io_mode="ds1000",
        # metadata last would let a stray "reference" key replace the reference program
        meta={**metadata, "reference": reference, "library": metadata.get("library")},
    )
