"""The `Problem` every stage works on, and the record of rows a reader set aside."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Domain = Literal["apps", "bigcodebench", "ds1000", "humaneval", "toy"]
DOMAINS: tuple[str, ...] = ("apps", "bigcodebench", "ds1000", "humaneval", "toy")

# How a problem's tests are run (restrl.sandbox picks the checker from this):
#   stdio    - APPS: program reads stdin, output compared in the host
#   call     - APPS call-based: `entry_point(*inputs)` (or `Solution().entry_point`),
#              compared in the host
#   check    - HumanEval / toy: test code defines `check(candidate)`; pass = returns
#   unittest - BigCodeBench: test code defines `class TestCases(unittest.TestCase)`
#   ds1000   - DS1000: code_context defines `test_execution(solution)` (+ optional `test_string`)
IoMode = Literal["stdio", "call", "check", "unittest", "ds1000"]
IO_MODES: tuple[str, ...] = ("stdio", "call", "check", "unittest", "ds1000")

ProblemKey = tuple[str, str]  # (domain, problem_id)


@dataclass(frozen=True)
class Problem:
    """One programming problem, in the same shape for every domain.

    `tests` is text: JSON `{"inputs": [...], "outputs": [...]}` for APPS, Python test code for
    HumanEval / BigCodeBench / toy, DS1000's `code_context`. `init_code` is the code the reply
    starts from (starter code, signature, code prompt); a full program is `init_code + sample`.
    """

    problem_id: str
    domain: str
    prompt: str
    init_code: str
    tests: str
    entry_point: str = ""
    io_mode: str = "check"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}; expected one of {DOMAINS}")
        if self.io_mode not in IO_MODES:
            raise ValueError(f"unknown io_mode {self.io_mode!r}; expected one of {IO_MODES}")
        if not self.problem_id:
            raise ValueError("problem_id is empty")

    @property
    def key(self) -> ProblemKey:
        """(domain, problem_id): what identifies a problem across problem sets (APPS and DS1000
        ids are both small integers, so an id alone is ambiguous)."""
        return (self.domain, self.problem_id)

    def apps_tests(self) -> dict[str, Any]:
        """APPS tests as a dict with `inputs`, `outputs` (and `fn_name` for call-based)."""
        return json.loads(self.tests)


def index_problems(problems: Iterable[Problem]) -> dict[ProblemKey, Problem]:
    """Problems by (domain, problem_id); a key that appears twice is an error, never a silent
    overwrite (a completion would be scored against another problem's tests)."""
    by_key: dict[ProblemKey, Problem] = {}
    for problem in problems:
        if problem.key in by_key:
            raise ValueError(f"problem {problem.domain}/{problem.problem_id} appears twice")
        by_key[problem.key] = problem
    return by_key


@dataclass(frozen=True)
class RejectedRow:
    """A dataset row a reader set aside: where it is and why (never silently repaired)."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class ReadResult:
    """What a reader returns: the problems that loaded and the rows set aside."""

    problems: list[Problem] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
