"""APPS reader: the ReST-RL seed's preprocessed rows and rows with the original APPS fields.

Seed rows: `id`, `prompt` (the problem text), `code` (starter code), `test` (JSON or a Python
literal of `{"inputs", "outputs", "fn_name"?}`, or that dict itself).
Original rows: `problem_id` (or `id`), `question`, `starter_code`, `input_output` (JSON),
optional `solutions` (JSON list of programs), `difficulty`, `url`.

`Problem.prompt` is the problem text q as the row gives it (the seed's `data/reader.py` passes
`prompt` through unchanged); how the program is run ("Standard Input format" / "Call-Based
format") is said by the query template (`restrl.prompts.user_message`), not baked in here.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
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


@dataclass(frozen=True)
class AppsTests:
    """A checked APPS test spec: equal-length inputs and outputs, fn_name "" for stdio."""

    inputs: list[Any]
    outputs: list[Any]
    fn_name: str = ""

    @property
    def io_mode(self) -> str:
        return "call" if self.fn_name else "stdio"

    def to_json(self) -> str:
        spec: dict[str, Any] = {"inputs": self.inputs, "outputs": self.outputs}
        if self.fn_name:
            spec["fn_name"] = self.fn_name
        return json.dumps(spec)


def read_apps(path: str | Path) -> ReadResult:
    """Read an APPS JSONL file (seed or original shape, row by row)."""
    return read_json_rows(path, parse_apps_row)


def parse_apps_row(row: dict[str, Any]) -> Problem:
    """One APPS row as a Problem; the original field names decide the shape."""
    if "question" in row or "input_output" in row:
        return _parse_original(row)
    return _parse_seed(row)


def _parse_seed(row: dict[str, Any]) -> Problem:
    tests = parse_test_spec(require(row, "test"), "test")
    return _problem(
        problem_id=require_id(row, "id"),
        prompt=require_str(row, "prompt"),
        init_code=optional_str(row, "code"),
        tests=tests,
        row=row,
    )


def _parse_original(row: dict[str, Any]) -> Problem:
    problem_id = require_id(row, "problem_id" if "problem_id" in row else "id")
    tests = parse_test_spec(require(row, "input_output"), "input_output")
    return _problem(
        problem_id=problem_id,
        prompt=require_str(row, "question"),
        init_code=optional_str(row, "starter_code"),
        tests=tests,
        row=row,
    )


def _problem(
    problem_id: str, prompt: str, init_code: str, tests: AppsTests, row: dict[str, Any]
) -> Problem:
    return Problem(
        problem_id=problem_id,
        domain="apps",
        prompt=prompt,
        init_code=init_code,
        tests=tests.to_json(),
        entry_point=tests.fn_name,
        io_mode=tests.io_mode,
        meta=_meta(row),
    )


def parse_test_spec(value: Any, key: str) -> AppsTests:
    """Check an APPS test spec given as a dict, JSON text, or Python-literal text."""
    spec = _spec_from_text(value, key) if isinstance(value, str) else value
    if not isinstance(spec, dict):
        raise RowError(
            f"field {key!r} must hold a dict of inputs/outputs, got {type(spec).__name__}"
        )
    inputs, outputs = spec.get("inputs"), spec.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise RowError(f"field {key!r}: 'inputs' and 'outputs' must both be lists")
    if len(inputs) != len(outputs):
        raise RowError(f"field {key!r}: {len(inputs)} inputs but {len(outputs)} outputs")
    if not inputs:
        raise RowError(f"field {key!r}: no test cases")
    fn_name = spec.get("fn_name") or ""  # stdio rows omit it or leave it null
    if not isinstance(fn_name, str):
        raise RowError(f"field {key!r}: 'fn_name' must be a string, got {type(fn_name).__name__}")
    tests = AppsTests(inputs=inputs, outputs=outputs, fn_name=fn_name)
    try:
        tests.to_json()
    except (TypeError, ValueError) as err:  # a Python literal can hold sets, bytes, ...
        raise RowError(f"field {key!r}: test values are not JSON data ({err})") from err
    return tests


def _spec_from_text(text: str, key: str) -> Any:
    if not text.strip():
        raise RowError(f"field {key!r} is empty: no tests")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    # Some preprocessed APPS files wrote the spec with Python's repr (single quotes, True/None).
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
        raise RowError(f"field {key!r} is neither JSON nor a Python literal ({err})") from err


def _meta(row: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        key: row[key] for key in ("difficulty", "url") if row.get(key) is not None
    }
    reference = _first_solution(row.get("solutions"))
    if reference is not None:
        meta["reference"] = reference
    return meta


def _first_solution(solutions: Any) -> str | None:
    """The first reference program, if the row has any (APPS stores them as a JSON string)."""
    if solutions is None or solutions == "":
        return None
    if isinstance(solutions, str):
        try:
            solutions = json.loads(solutions)
        except json.JSONDecodeError as err:
            raise RowError(f"field 'solutions' is not a JSON list ({err.msg})") from err
    if not isinstance(solutions, list) or not all(isinstance(s, str) for s in solutions):
        raise RowError("field 'solutions' must be a list of program strings")
    return solutions[0] if solutions else None
