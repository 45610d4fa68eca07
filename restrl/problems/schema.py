"""The `problems` Parquet table: schema, conversion to and from `Problem`, file read/write.

`meta` is stored as JSON text so that every domain's extra fields fit one column and come back
exactly as they went in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from restrl.problems._rows import RowError, accept, existing_file, reject
from restrl.problems.model import Problem, ReadResult

TEXT_COLUMNS: tuple[str, ...] = (
    "problem_id",
    "domain",
    "prompt",
    "init_code",
    "tests",
    "entry_point",
    "io_mode",
)

PROBLEMS_SCHEMA = pa.schema(
    [pa.field(name, pa.string(), nullable=False) for name in TEXT_COLUMNS]
    + [pa.field("meta", pa.string(), nullable=False)]  # JSON object text
)


def problems_to_table(problems: Iterable[Problem]) -> pa.Table:
    """Problems as a table with `PROBLEMS_SCHEMA`; ValueError if a meta would not round-trip."""
    columns: dict[str, list[str]] = {name: [] for name in PROBLEMS_SCHEMA.names}
    for problem in problems:
        for name in TEXT_COLUMNS:
            columns[name].append(getattr(problem, name))
        columns["meta"].append(_meta_to_json(problem))
    return pa.table(columns, schema=PROBLEMS_SCHEMA)


def table_to_problems(table: pa.Table) -> list[Problem]:
    """The problems of a problems table; ValueError listing every row that is not one."""
    result = _read_table(table, file="<table>", domain=None)
    if result.rejected:
        raise ValueError("not a valid problems table: " + "; ".join(map(str, result.rejected)))
    return result.problems


def write_problems_parquet(problems: Iterable[Problem], path: str | Path) -> Path:
    """Write problems to a Parquet file; the file appears whole or not at all."""
    path = Path(path)
    table = problems_to_table(problems)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    pq.write_table(table, partial)
    os.replace(partial, path)
    return path


def read_problems_parquet(path: str | Path, domain: str | None = None) -> ReadResult:
    """Read a problems Parquet file; rows that are not valid problems (or, when `domain` is
    given, belong to another domain) are set aside with their 1-based row number as line."""
    file = existing_file(path)
    return _read_table(pq.read_table(file), file=str(file), domain=domain)


def _read_table(table: pa.Table, file: str, domain: str | None) -> ReadResult:
    missing = [name for name in PROBLEMS_SCHEMA.names if name not in table.column_names]
    if missing:
        raise ValueError(f"{file}: not a problems table, missing columns {missing}")
    result = ReadResult()
    seen: dict[tuple[str, str], int] = {}
    rows = table.select(PROBLEMS_SCHEMA.names).to_pylist()
    for line, row in enumerate(rows, start=1):
        try:
            problem = _row_to_problem(row)
        except ValueError as err:  # RowError, or Problem's own checks
            reject(result, file, line, str(err))
            continue
        if domain is not None and problem.domain != domain:
            reject(result, file, line, f"domain {problem.domain!r} is not {domain!r}")
            continue
        accept(result, seen, problem, file, line)
    return result


def _row_to_problem(row: dict[str, Any]) -> Problem:
    for name in PROBLEMS_SCHEMA.names:
        if not isinstance(row[name], str):
            raise RowError(f"column {name!r} is null")
    try:
        meta = json.loads(row["meta"])
    except json.JSONDecodeError as err:
        raise RowError(f"column 'meta' is not JSON ({err.msg})") from err
    if not isinstance(meta, dict):
        raise RowError("column 'meta' is not a JSON object")
    return Problem(**{name: row[name] for name in TEXT_COLUMNS}, meta=meta)


def _meta_to_json(problem: Problem) -> str:
    try:
        text = json.dumps(problem.meta, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"meta of problem {problem.problem_id!r} is not JSON data: {err}") from err
    # Tuples and non-string keys would come back changed; refuse rather than alter them.
    if json.loads(text) != problem.meta:
        raise ValueError(f"meta of problem {problem.problem_id!r} does not survive JSON unchanged")
    return text
