"""Shared row machinery for the dataset readers: open, split into rows, set bad rows aside.

Every reader turns one raw row (a JSON object) into a `Problem` or raises `RowError`; this module
does the rest the same way for all of them: line numbers, bad JSON, duplicate ids, logging.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restrl.problems.model import Problem, ReadResult, RejectedRow

logger = logging.getLogger("restrl.problems")


class RowError(ValueError):
    """A row is malformed; the message is the reason it is set aside."""


@dataclass(frozen=True)
class RawRow:
    """One row as found in the file: its 1-based line, and its value or why it did not parse."""

    line: int
    value: Any = None
    error: str | None = None
    label: str = ""  # "item N: " for rows of a JSON list, so the reason names the item too


def existing_file(path: str | Path) -> Path:
    """`path` as a Path, or FileNotFoundError naming it (readers never guess another file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"problems file not found: {path}")
    return path


def reject(result: ReadResult, file: str, line: int, reason: str) -> None:
    """Set a row aside and say so once in the log."""
    row = RejectedRow(file=file, line=line, reason=reason)
    result.rejected.append(row)
    logger.warning("rejected row %s", row)


def accept(
    result: ReadResult, seen: dict[tuple[str, str], int], problem: Problem, file: str, line: int
) -> None:
    """Keep `problem` unless an earlier row already used its (domain, id) (the first wins)."""
    first = seen.get(problem.key)
    if first is not None:
        reason = f"duplicate problem_id {problem.problem_id!r} (first at line {first})"
        reject(result, file, line, reason)
        return
    seen[problem.key] = line
    result.problems.append(problem)


def read_json_rows(path: str | Path, parse: Callable[[dict[str, Any]], Problem]) -> ReadResult:
    """Read a JSONL or JSON-list file (optionally gzipped) through `parse`, one row at a time."""
    file = existing_file(path)
    name = str(file)
    result = ReadResult()
    seen: dict[tuple[str, str], int] = {}
    for raw in iter_raw_rows(file):
        if raw.error is not None:
            reject(result, name, raw.line, raw.label + raw.error)
            continue
        if not isinstance(raw.value, dict):
            reject(result, name, raw.line, f"{raw.label}row is not a JSON object")
            continue
        try:
            problem = parse(raw.value)
        except ValueError as err:  # RowError, or Problem's own checks
            reject(result, name, raw.line, f"{raw.label}{err}")
            continue
        accept(result, seen, problem, name, raw.line)
    return result


def iter_raw_rows(path: Path) -> Iterator[RawRow]:
    """Rows of a `.json` list file, or of a JSONL file; `.gz` files are gunzipped first."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    stem = path.name.removesuffix(".gz")
    if stem.endswith(".json") or (not stem.endswith(".jsonl") and data.lstrip()[:1] == b"["):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text ({err})") from err
        yield from _json_list_rows(text)
    else:
        yield from _jsonl_rows(data)


def _jsonl_rows(data: bytes) -> Iterator[RawRow]:
    # Split bytes on b"\n" only: str.splitlines would also split on U+2028 inside JSON strings.
    for number, chunk in enumerate(data.split(b"\n"), start=1):
        if not chunk.strip():
            continue
        try:
            yield RawRow(number, value=json.loads(chunk.decode("utf-8")))
        except UnicodeDecodeError as err:
            yield RawRow(number, error=f"not UTF-8 text: {err}")
        except json.JSONDecodeError as err:
            yield RawRow(number, error=f"invalid JSON: {err.msg} (column {err.colno})")


def _json_list_rows(text: str) -> Iterator[RawRow]:
    """Items of a JSON list with the line each starts on.

    A syntax error inside a list leaves no safe place to resume, so it ends the file with one
    rejected row for the rest (items before it still load).
    """
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if text[pos : pos + 1] != "[":
        yield RawRow(_line_at(text, pos), error="not a JSON list")
        return
    pos = _skip_ws(text, pos + 1)
    if text[pos : pos + 1] == "]":
        return
    item = 0
    while True:
        item += 1
        label = f"item {item}: "
        line = _line_at(text, pos)
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            msg = f"invalid JSON: {err.msg} (column {err.colno}); rest of file skipped"
            yield RawRow(err.lineno, error=msg, label=label)
            return
        yield RawRow(line, value=value, label=label)
        pos = _skip_ws(text, end)
        if text[pos : pos + 1] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if text[pos : pos + 1] != "]" or _skip_ws(text, pos + 1) != len(text):
            msg = "invalid JSON: expected ',' or ']' after the item; rest of file skipped"
            yield RawRow(_line_at(text, pos), error=msg, label=label)
        return


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line_at(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


# Field access: a reader names what it needs, and a wrong type is a reason, never a repair.


def require(row: dict[str, Any], key: str) -> Any:
    if key not in row or row[key] is None:
        raise RowError(f"missing required field {key!r}")
    return row[key]


def require_str(row: dict[str, Any], key: str) -> str:
    value = require(row, key)
    if not isinstance(value, str):
        raise RowError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def optional_str(row: dict[str, Any], key: str) -> str:
    """A text field that may be absent or null (starter code): then it is ""."""
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RowError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def require_id(row: dict[str, Any], key: str) -> str:
    """An id given as a string or an integer, as text."""
    value = require(row, key)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RowError(f"field {key!r} must be a string or an integer, got {type(value).__name__}")
    text = str(value)
    if not text:
        raise RowError(f"field {key!r} is empty")
    return text
