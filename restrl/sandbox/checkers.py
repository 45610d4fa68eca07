"""Per-domain checkers: turn (problem, program) into sandbox jobs and the results into a Verdict.

By default each checker computes the original ReST-RL reward (see docs/fidelity.md for where
restrl deliberately differs):
- APPS: the classic APPS harness: an import header before the program, every test with its
  own time limit (a timeout or an error scores that test 0, later tests still run), its output
  comparison rules, reward = passed / tests, 0 for a program that does not compile.
- BigCodeBench: the task's TestCases under unittest, reward = (run - failures - errors) / run.
- DS1000: `test_execution` (and `test_string`) on the solution with the initial code removed.

Where outputs can be compared outside the program (APPS stdin/stdout and call-based), the
expected outputs never enter the sandbox and the comparison happens here, in the host. Where the
tests are assertions (HumanEval, toy, BigCodeBench, DS1000), outcomes come from the sealed
report of the sandbox's vault (see `restrl.sandbox.server`), and a missing report means the
tests did not all run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from pydantic import Field

from restrl.configs import config
from restrl.problems.model import Problem
from restrl.sandbox.limits import GRACE_SECONDS, Limits
from restrl.sandbox.pool import RunResult
from restrl.sandbox.server import EXIT_SYSTEM_EXIT, decode_value, encode_value
from restrl.sandbox.verdict import Verdict, worst_status

RunJob = Callable[[dict], RunResult]
_FLOAT_TOL = 1e-6

# Run before every APPS program, in its namespace: the original harness prepends these imports,
# so programs that use the names without importing them pass. numpy is optional here.
APPS_IMPORT_HEADER = """\
import sys
import time
import itertools
from itertools import accumulate, product, permutations, combinations
import collections
from collections import Counter, OrderedDict, deque, defaultdict, ChainMap
from functools import lru_cache
import math
from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2
import fractions
from typing import List, Tuple
try:
    import numpy as np
except ImportError:
    pass
import random
import heapq
from heapq import *
"""


@config
class CheckOptions:
    """How outcomes are judged (limits are in `Limits`); the defaults give the original rewards."""

    apps_compare: Literal["reference", "strict"] = Field("reference", description=(
        "APPS output comparison. \"reference\" (default) = the original APPS harness's rules. "
        "stdin/stdout: the output passes if its stripped text, or its stripped non-empty lines, "
        "equal the expected output's, or every line is a number and they are `np.allclose`, or "
        "each line's *set* of tokens matches (lines and repeats in any order; tokens also as "
        "floats rounded to 3 places); a script ending in `sys.exit(n)` is judged on its output. "
        "Call-based: `got == expected` or `got == expected[0]`, dict keys of inputs and outputs "
        "that are all integers in text become ints. \"strict\" = restrl's stricter rules: "
        "stdout equal after strip or token by token (floats within 1e-6), a non-zero exit "
        "fails; call-based `got == expected` or `[got] == expected`, no key conversion. Both "
        "compare call results with their types (1 is not True) and floats within 1e-6."))
    ds1000_tests_run: Literal["checker", "program"] = Field("checker", description=(
        "Where DS1000's code_context runs. \"checker\" (default): in the checker process; each "
        "`exec(code, test_env)` runs the solution in the program's process on data carried "
        "over, so the program cannot read the expected result or change the test (checks with "
        "matplotlib or uncarried inputs still run in the program's process). \"program\": the "
        "whole test in the program's process, as the original harness: the same verdicts for "
        "honest programs, somewhat faster, forgeable by a hostile one."))


DEFAULT_OPTIONS = CheckOptions()


# ----------------------------------------------------------------------------- comparisons


def _expected_text(expected: object) -> str:
    """APPS outputs given as a list of lines are joined with newlines."""
    if isinstance(expected, list):
        return "\n".join(str(x) for x in expected)
    return str(expected)


def strict_stdout_matches(got: str, expected: object) -> bool:
    """Exact after strip, else token-wise with float tolerance (restrl's "strict" mode)."""
    expected = _expected_text(expected)
    if got.strip() == expected.strip():
        return True
    got_tokens, exp_tokens = got.split(), expected.split()
    if got_tokens == exp_tokens:
        return True
    if len(got_tokens) != len(exp_tokens):
        return False
    return all(a == b or _floats_close(a, b) for a, b in zip(got_tokens, exp_tokens, strict=True))


def reference_stdout_matches(got: str, expected: object) -> bool:
    """The original APPS harness's rules, in its order; any one that holds accepts the output."""
    expected = _expected_text(expected)
    lines = got.splitlines()
    # The text, or its lines each stripped, equal the expected text (both stripped).
    if expected.strip() in ("\n".join(lines).strip(), "\n".join(x.strip() for x in lines).strip()):
        return True
    # The lines, or the non-empty ones, equal the expected non-empty lines stripped.
    want = [x.strip() for x in expected.split("\n") if x]
    non_empty = [x for x in lines if x]
    if want in (lines, non_empty):
        return True
    # Every line is one number, pairwise close as np.allclose (rtol 1e-5, atol 1e-8).
    if _all_close(non_empty, want):
        return True
    # Each line as a set of tokens; the lines as a set too (order and repeats ignored).
    got_sets = {frozenset(x.split()) for x in non_empty if x.split()}
    want_sets = {frozenset(x.split()) for x in want}
    if got_sets == want_sets:
        return True
    try:  # ... and with every token a float rounded to 3 places
        return ({frozenset(round(float(t), 3) for t in s) for s in got_sets}
                == {frozenset(round(float(t), 3) for t in s) for s in want_sets})
    except (ValueError, OverflowError):
        return False


def _all_close(got: list[str], want: list[str]) -> bool:
    try:
        a, b = [float(x) for x in got], [float(x) for x in want]
    except ValueError:
        return False
    return len(a) == len(b) and all(
        x == y or (math.isfinite(x) and math.isfinite(y) and abs(x - y) <= 1e-8 + 1e-5 * abs(y))
        for x, y in zip(a, b, strict=True))


def stdout_matches(got: str, expected: object, mode: str = "reference") -> bool:
    """Whether an APPS program's stdout is accepted for `expected` under `mode`."""
    if mode == "strict":
        return strict_stdout_matches(got, expected)
    return reference_stdout_matches(got, expected)


def _floats_close(a: str, b: str) -> bool:
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return math.isclose(x, y, rel_tol=_FLOAT_TOL, abs_tol=_FLOAT_TOL)


def values_equal(got: object, expected: object) -> bool:
    """Typed equality of JSON values: bool is not int, numbers within float tolerance."""
    if isinstance(got, bool) or isinstance(expected, bool):
        return type(got) is type(expected) and got == expected
    if isinstance(got, (int, float)) and isinstance(expected, (int, float)):
        return got == expected or math.isclose(got, expected, rel_tol=_FLOAT_TOL,
                                               abs_tol=_FLOAT_TOL)
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(
            values_equal(a, b) for a, b in zip(got, expected, strict=True))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(values_equal(got[k], expected[k]) for k in got)
    return type(got) is type(expected) and got == expected


def int_keyed(value: dict) -> dict | None:
    """`value` with its keys as ints, or None if one is not an integer in text (as the original:
    JSON forces string keys, the harness turns them back, all or none)."""
    try:
        return {int(k): v for k, v in value.items()}
    except (TypeError, ValueError):
        return None


def reference_call_args(args: object) -> object:
    """Call-based arguments as the original passes them: a dict first argument gets int keys."""
    if isinstance(args, list) and args and isinstance(args[0], dict):
        keyed = int_keyed(args[0])
        if keyed is not None:
            return [keyed, *args[1:]]
    return args


def _reference_expected(expected: object) -> object:
    """The expected output as the original compares it: a dict (alone or first) gets int keys
    and is wrapped in a list."""
    if isinstance(expected, dict):
        keyed = int_keyed(expected)
        return expected if keyed is None else [keyed]
    if isinstance(expected, list) and expected and isinstance(expected[0], dict):
        keyed = int_keyed(expected[0])
        if keyed is not None:
            return [keyed, *expected[1:]]
    return expected


def reference_call_matches(got: object, expected: object) -> bool:
    """The original's rule: `got == expected` or `got == expected[0]` (tuples already lists)."""
    expected = _reference_expected(expected)
    if values_equal(got, expected):
        return True
    return isinstance(expected, list) and bool(expected) and values_equal(got, expected[0])


def strict_call_matches(got: object, expected: object) -> bool:
    """restrl's "strict" rule: `got == expected` or `[got] == expected`."""
    return values_equal(got, expected) or values_equal([got], expected)


def call_result_matches(got: object, expected: object, mode: str = "reference") -> bool:
    """Whether an APPS call-based result is accepted for `expected` under `mode`."""
    if mode == "strict":
        return strict_call_matches(got, expected)
    return reference_call_matches(got, expected)


# ----------------------------------------------------------------------------- checkers


def _error_text(run: RunResult) -> str:
    for msg in run.messages:
        for key in ("load_error", "error"):
            if key in msg:
                return str(msg[key])[:500]
    if run.status == "timeout":
        return "timed out"
    if run.status == "memory":
        return "memory limit exceeded"
    if run.status == "output_limit":
        return "output limit exceeded"
    return run.stderr.strip()[-500:]


def _test_status(run: RunResult, passed: bool, finished: bool) -> str:
    if run.status != "ok":
        return run.status
    if passed:
        return "passed"
    return "failed" if finished else "error"


def _load_error(run: RunResult) -> str | None:
    """Why the program could not be loaded (does not compile; call-based: raised on import)."""
    for msg in run.messages:
        if "load_error" in msg:
            return str(msg["load_error"])[:500]
    return None


def _apps_job(program: str, fn_name: str, test_in: object, mode: str, limits: Limits) -> dict:
    if fn_name:
        args = reference_call_args(test_in) if mode == "reference" else test_in
        job = {"driver": "call", "entry_point": fn_name, "args": encode_value(args)}
    else:
        job = {"driver": "script", "stdin": _expected_text(test_in)}
    io_mode = "call" if fn_name else "stdio"
    return {**job, "program": program, "prelude": APPS_IMPORT_HEADER,
            "limits": limits.for_job(io_mode)}


def _apps_outcome(result: RunResult, fn_name: str, expected: object,
                  mode: str) -> tuple[bool, bool]:
    """(passed, finished): whether the test passed, and whether the program ran to its end."""
    if fn_name:
        values = [m["result"] for m in result.messages if "result" in m]
        if result.exit_code != 0 or len(values) != 1:
            return False, False
        try:
            got = decode_value(values[0])
        except (ValueError, RecursionError):
            return False, False
        return call_result_matches(got, expected, mode), True
    # The original judges the output of a script that raised SystemExit, whatever its status.
    clean = (0, EXIT_SYSTEM_EXIT) if mode == "reference" else (0,)
    if result.exit_code not in clean:
        return False, False
    return stdout_matches(result.stdout.decode("utf-8", "replace"), expected, mode), True


def check_apps(problem: Problem, program: str, run: RunJob, limits: Limits, isolation: str,
               options: CheckOptions = DEFAULT_OPTIONS) -> Verdict:
    """APPS stdin/stdout or call-based: reward = fraction of tests passed.

    Each test runs in its own child with its own `limits.timeout`; a test that times out or
    raises scores 0 and the later tests still run. A program that does not load scores 0, and
    so do tests that together run past `limits.job_timeout` (the original's process limit).
    """
    spec = problem.apps_tests()
    inputs, outputs = spec["inputs"], spec["outputs"]
    fn_name = spec.get("fn_name") or problem.entry_point
    mode = options.apps_compare
    total = len(inputs)
    budget = limits.job_timeout + GRACE_SECONDS
    statuses: list[str] = []
    error = ""
    seconds = 0.0
    for index, (test_in, test_out) in enumerate(zip(inputs, outputs, strict=True)):
        result = run(_apps_job(program, fn_name, test_in, mode, limits))
        seconds += result.seconds
        load_error = _load_error(result)
        if load_error is not None:
            return Verdict(0.0, "error", 0, total, f"the program does not load: {load_error}",
                           seconds, isolation)
        passed, finished = _apps_outcome(result, fn_name, test_out, mode)
        status = _test_status(result, passed, finished)
        statuses.append(status)
        if status != "passed" and not error:
            error = f"test {index}: " + (_error_text(result) or "wrong answer")
        if seconds > budget:
            return Verdict(0.0, "timeout", 0, total, f"the tests together ran past "
                           f"{limits.job_timeout:g} s; " + error, seconds, isolation)
    passed_count = statuses.count("passed")
    return Verdict(reward=passed_count / total if total else 0.0,
                   status=worst_status(statuses) if total else "invalid",
                   tests_passed=passed_count, tests_total=total,
                   error=error if total else "no tests", seconds=seconds, isolation=isolation)


def _sealed_verdict(result: RunResult, isolation: str, expected_total: int,
                    empty: str = "no tests") -> Verdict:
    """Verdict from the vault's sealed report; no report means the tests did not all run.

    The number of tests is the one the driver counted (`expected_total` only shows how many
    were expected when there is no report).
    """
    vault = result.vault
    if result.status != "ok":
        return Verdict(0.0, result.status, 0, expected_total, _error_text(result),
                       result.seconds, isolation)
    if vault is None:
        error = _error_text(result) or "the program exited before the tests finished"
        return Verdict(0.0, "error", 0, expected_total, error, result.seconds, isolation)
    total = vault["total"]
    if vault["status"] != "ok":
        return Verdict(0.0, "invalid", 0, total, "tampering detected: " + vault["reason"],
                       result.seconds, isolation)
    if total <= 0:
        return Verdict(0.0, "invalid", 0, 0, _error_text(result) or empty, result.seconds,
                       isolation)
    passed = min(max(vault["passed"], 0), total)
    status = "passed" if passed == total else "failed"
    error = "" if status == "passed" else _error_text(result)
    return Verdict(passed / total, status, passed, total, error, result.seconds, isolation)


def check_function(problem: Problem, program: str, run: RunJob, limits: Limits, isolation: str,
                   options: CheckOptions = DEFAULT_OPTIONS) -> Verdict:
    """HumanEval and toy: `check(candidate)` returns -> 1, anything else -> 0."""
    job = {"driver": "check", "program": program, "tests": problem.tests,
           "entry_point": problem.entry_point, "test_timeout": limits.seconds("check"),
           "limits": limits.for_job("check")}
    return _sealed_verdict(run(job), isolation, 1)


def check_unittest(problem: Problem, program: str, run: RunJob, limits: Limits, isolation: str,
                   options: CheckOptions = DEFAULT_OPTIONS) -> Verdict:
    """BigCodeBench: reward = (run - failures - errors) / tests, counted inside the sandbox.

    The driver loads TestCases' tests (inherited ones included) before the program runs and
    the whole suite has `limits.job_timeout`; a skip the test code declared counts as passed.
    """
    job = {"driver": "unittest", "program": program, "tests": problem.tests,
           "limits": limits.for_job("unittest")}
    return _sealed_verdict(run(job), isolation, 0, "no test methods in TestCases")


def ds1000_solution(problem: Problem, program: str) -> str:
    """The solution DS1000's tests receive: the program after its initial code (the original's
    `completion.split(init)[-1]`), so that the initial code is not there twice."""
    init = problem.init_code
    return program.split(init)[-1] if init else program


def check_ds1000(problem: Problem, program: str, run: RunJob, limits: Limits, isolation: str,
                 options: CheckOptions = DEFAULT_OPTIONS) -> Verdict:
    """DS1000: `test_execution(solution)` (and `test_string`) from code_context -> 1 or 0.

    code_context runs in the checker process, the solution in the program's: each
    `exec(code, test_env)` of the test sends the code and test_env there as data and gets the
    names it left back as data, so the expected result and the comparison stay out of the
    program's reach. Where that cannot be (matplotlib's global figure, a test input or an
    expected result that is not carried as data), the whole test runs in the program's
    process under the vault, as in the original.
    """
    solution = ds1000_solution(problem, program)
    job = {"program": solution, "tests": problem.tests, "test_timeout": limits.seconds("ds1000"),
           "limits": limits.for_job("ds1000")}
    if options.ds1000_tests_run == "checker" and "matplotlib" not in problem.tests:
        result = run({**job, "driver": "check", "checker": "ds1000", "program": "",
                      "solution": solution, "entry_point": ""})
        if not (result.vault or {}).get("in_process"):
            return _sealed_verdict(result, isolation, 1)
    return _sealed_verdict(run({**job, "driver": "ds1000"}), isolation, 1)


CHECKERS: dict[str, Callable[..., Verdict]] = {
    "stdio": check_apps,
    "call": check_apps,
    "check": check_function,
    "unittest": check_unittest,
    "ds1000": check_ds1000,
}


def check_program(problem: Problem, program: str, run: RunJob, limits: Limits, isolation: str,
                  options: CheckOptions = DEFAULT_OPTIONS) -> Verdict:
    """Judge one program (`init_code + sample`) with its problem's checker."""
    if problem.io_mode in ("stdio", "call"):
        try:
            spec = problem.apps_tests()
            if len(spec["inputs"]) != len(spec["outputs"]):
                raise ValueError("inputs and outputs differ in length")
        except (ValueError, KeyError, TypeError) as exc:
            return Verdict(0.0, "invalid", 0, 0, f"unusable tests: {exc}", 0.0, isolation)
    return CHECKERS[problem.io_mode](problem, program, run, limits, isolation, options)
