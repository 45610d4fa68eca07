"""Per-domain checkers: turn (problem, program) into sandbox jobs and the results into a Verdict.

Where outputs can be compared outside the program (APPS stdin/stdout and call-based), the
expected outputs never enter the sandbox and the comparison happens here, in the host. Where the
tests are assertions (HumanEval, toy, BigCodeBench, DS1000), outcomes come from the sealed
report of the sandbox's vault (see `restrl.sandbox.server`), and a missing report means the
tests did not all run.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable

from restrl.problems.model import Problem
from restrl.sandbox.limits import Limits
from restrl.sandbox.pool import RunResult
from restrl.sandbox.verdict import Verdict, worst_status

RunJob = Callable[[dict], RunResult]
_FLOAT_TOL = 1e-6


# ----------------------------------------------------------------------------- comparisons


def stdout_matches(got: str, expected: object) -> bool:
    """APPS-harness tolerance: exact after strip, else token-wise with float tolerance."""
    if isinstance(expected, list):
        expected = "\n".join(str(x) for x in expected)
    expected = str(expected)
    if got.strip() == expected.strip():
        return True
    got_tokens, exp_tokens = got.split(), expected.split()
    if got_tokens == exp_tokens:
        return True
    if len(got_tokens) != len(exp_tokens):
        return False
    return all(a == b or _floats_close(a, b) for a, b in zip(got_tokens, exp_tokens, strict=True))


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


def call_result_matches(got: object, expected: object) -> bool:
    """APPS call-based outputs are often wrapped in a list: accept `got` or `[got]`."""
    return values_equal(got, expected) or values_equal([got], expected)


def unittest_names(test_code: str) -> list[str]:
    """Test method names of `class TestCases` (or the first TestCase subclass), parsed here."""
    tree = ast.parse(test_code)
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    chosen = next((c for c in classes if c.name == "TestCases"), None)
    if chosen is None:
        chosen = next((c for c in classes if any("TestCase" in ast.unparse(b) for b in c.bases)),
                      None)
    if chosen is None:
        return []
    return [node.name for node in chosen.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name.startswith("test")]


# ----------------------------------------------------------------------------- checkers


def _error_text(run: RunResult) -> str:
    for msg in run.messages:
        if "error" in msg:
            return str(msg["error"])[:500]
    if run.status == "timeout":
        return "timed out"
    if run.status == "memory":
        return "memory limit exceeded"
    if run.status == "output_limit":
        return "output limit exceeded"
    return run.stderr.strip()[-500:]


def _test_status(run: RunResult, passed: bool) -> str:
    if run.status != "ok":
        return run.status
    if passed:
        return "passed"
    return "failed" if run.exit_code == 0 else "error"


def check_apps(problem: Problem, program: str, run: RunJob, limits: Limits,
               isolation: str) -> Verdict:
    """APPS stdin/stdout or call-based: reward = fraction of tests passed."""
    spec = problem.apps_tests()
    inputs, outputs = spec["inputs"], spec["outputs"]
    fn_name = spec.get("fn_name") or problem.entry_point
    statuses: list[str] = []
    errors: list[str] = []
    seconds = 0.0
    for index, (test_in, test_out) in enumerate(zip(inputs, outputs, strict=True)):
        if statuses and statuses[-1] == "timeout":
            # The APPS harness stops at a timeout too: later tests would only wait as long.
            statuses.extend(["timeout"] * (len(inputs) - index))
            break
        if fn_name:
            job = {"driver": "call", "program": program, "entry_point": fn_name, "args": test_in}
        else:
            stdin = "\n".join(test_in) if isinstance(test_in, list) else str(test_in)
            job = {"driver": "script", "program": program, "stdin": stdin}
        job["limits"] = limits.for_job(1)
        result = run(job)
        seconds += result.seconds
        if fn_name:
            values = [m["result"] for m in result.messages if "result" in m]
            ok = result.exit_code == 0 and len(values) == 1 and call_result_matches(
                values[0], test_out)
        else:
            got = result.stdout.decode("utf-8", "replace")
            ok = result.exit_code == 0 and stdout_matches(got, test_out)
        status = _test_status(result, ok)
        statuses.append(status)
        if status != "passed" and not errors:
            errors.append(f"test {index}: " + (_error_text(result) or "wrong answer"))
    passed = statuses.count("passed")
    total = len(inputs)
    return Verdict(reward=passed / total if total else 0.0, status=worst_status(statuses)
                   if total else "invalid", tests_passed=passed, tests_total=total,
                   error=errors[0] if errors else ("" if total else "no tests"),
                   seconds=seconds, isolation=isolation)


def _sealed_verdict(result: RunResult, total: int, isolation: str) -> Verdict:
    """Verdict from the vault's sealed report; no report means the tests did not all run."""
    vault = result.vault
    if result.status != "ok":
        return Verdict(0.0, result.status, 0, total, _error_text(result), result.seconds, isolation)
    if vault is None:
        error = _error_text(result) or "the program exited before the tests finished"
        return Verdict(0.0, "error", 0, total, error, result.seconds, isolation)
    if vault["status"] != "ok":
        return Verdict(0.0, "invalid", 0, total, "tampering detected: " + vault["reason"],
                       result.seconds, isolation)
    outcomes = vault["outcomes"][:total]
    passed = outcomes.count("1")
    reward = passed / total if total else 0.0
    status = "passed" if total and passed == total else "failed"
    error = "" if status == "passed" else _error_text(result)
    return Verdict(reward, status, passed, total, error, result.seconds, isolation)


def check_function(problem: Problem, program: str, run: RunJob, limits: Limits,
                   isolation: str) -> Verdict:
    """HumanEval and toy: `check(candidate)` returns -> 1, anything else -> 0."""
    job = {"driver": "check", "program": program, "tests": problem.tests,
           "entry_point": problem.entry_point, "test_timeout": limits.timeout,
           "limits": limits.for_job(1)}
    return _sealed_verdict(run(job), 1, isolation)


def check_unittest(problem: Problem, program: str, run: RunJob, limits: Limits,
                   isolation: str) -> Verdict:
    """BigCodeBench: reward = passed test methods / test methods found in the test code."""
    names = unittest_names(problem.tests)
    if not names:
        return Verdict(0.0, "invalid", 0, 0, "no test methods in TestCases", 0.0, isolation)
    job = {"driver": "unittest", "program": program, "tests": problem.tests, "test_names": names,
           "test_timeout": limits.timeout, "limits": limits.for_job(len(names))}
    return _sealed_verdict(run(job), len(names), isolation)


def check_ds1000(problem: Problem, program: str, run: RunJob, limits: Limits,
                 isolation: str) -> Verdict:
    """DS1000: `test_execution(solution)` (and `test_string`) from code_context -> 1 or 0."""
    job = {"driver": "ds1000", "program": program, "tests": problem.tests,
           "test_timeout": limits.timeout * 4, "limits": limits.for_job(4)}
    return _sealed_verdict(run(job), 1, isolation)


CHECKERS: dict[str, Callable[..., Verdict]] = {
    "stdio": check_apps,
    "call": check_apps,
    "check": check_function,
    "unittest": check_unittest,
    "ds1000": check_ds1000,
}


def check_program(problem: Problem, program: str, run: RunJob, limits: Limits,
                  isolation: str) -> Verdict:
    """Judge one program with its problem's checker."""
    if problem.io_mode in ("stdio", "call"):
        try:
            spec = problem.apps_tests()
            if len(spec["inputs"]) != len(spec["outputs"]):
                raise ValueError("inputs and outputs differ in length")
        except (ValueError, KeyError, TypeError) as exc:
            return Verdict(0.0, "invalid", 0, 0, f"unusable tests: {exc}", 0.0, isolation)
    return CHECKERS[problem.io_mode](problem, program, run, limits, isolation)

