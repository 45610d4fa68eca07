"""The worker's persistent HumanEval/toy checker and the check-only preload: each job is judged
as if it were alone, whatever the jobs before it did in the same worker.

Run inside a PID namespace, as the other sandbox tests:
    unshare --pid --fork --mount-proc python -m pytest tests/test_sandbox_checker.py
"""

from __future__ import annotations

import pytest

from restrl.problems import Problem
from restrl.sandbox import Limits, Verifier, isolation
from restrl.sandbox.isolation import bwrap_works
from restrl.sandbox.pool import DEFAULT_PRELOAD, preload_for

CHECK_F = "def check(candidate):\n    assert candidate(2) == 3\n    assert candidate(5) == 6\n"
GOOD_F = "def f(x):\n    return x + 1\n"
WRONG_F = "def f(x):\n    return x\n"
BCB_TESTS = ("import unittest\nfrom unittest.mock import patch\n"
             "class TestCases(unittest.TestCase):\n"
             "    def test_a(self):\n        self.assertEqual(task_func(2), 3)\n"
             "    def test_b(self):\n        with patch('os.getcwd', return_value='x'):\n"
             "            self.assertEqual(task_func(5), 6)\n")

needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="needs working bubblewrap")


def he(pid: str = "p", tests: str = CHECK_F) -> Problem:
    return Problem(problem_id=pid, domain="humaneval", prompt="", init_code="", tests=tests,
                   entry_point="f", io_mode="check")


def bcb() -> Problem:
    return Problem(problem_id="b", domain="bigcodebench", prompt="", init_code="",
                   tests=BCB_TESTS, entry_point="task_func", io_mode="unittest")


@pytest.fixture(scope="module")
def one():
    """One HumanEval worker: every job runs after the previous one in the same server."""
    with Verifier(workers=1, limits=Limits(timeout=2.0), domains=["humaneval"]) as v:
        yield v


def rewards(verifier: Verifier, cases: list[tuple[Problem, str]]) -> list[float]:
    return [v.reward for v in verifier.verify([c[0] for c in cases], [c[1] for c in cases])]


def honest_after(verifier: Verifier) -> list[float]:
    return rewards(verifier, [(he(), GOOD_F), (he(), WRONG_F)])


def test_check_only_domains_preload_no_unittest():
    assert not [m for m in preload_for(["humaneval"]) if m.startswith("unittest")]
    assert not [m for m in preload_for(["humaneval", "toy"]) if m.startswith("unittest")]
    assert set(DEFAULT_PRELOAD) <= set(preload_for(["humaneval", "bigcodebench"]))
    assert set(DEFAULT_PRELOAD) <= set(preload_for([]))


@needs_bwrap
def test_a_check_only_worker_forks_its_jobs_without_unittest_loaded(one):
    # No check job needs it, and every fork would map (and partly copy) its 2 MB.
    tests = "def check(candidate):\n    assert candidate(0) is False\n"
    program = "import sys\ndef f(x):\n    return 'unittest' in sys.modules\n"
    assert rewards(one, [(he(tests=tests), program)]) == [1.0]


@needs_bwrap
def test_random_test_inputs_do_not_depend_on_the_jobs_before(one):
    # Test code drawing unseeded random inputs (as HumanEval/38 and /53 do) sees the same draws
    # in every job of a worker, as it would alone.
    tests = ("import random\nDRAW = random.random()\n"
             "def check(candidate):\n    assert candidate(DRAW)\n")
    verdicts = rewards(one, [(he("r", tests), "def f(x):\n    return x < 0.5\n")] * 6)
    assert len(set(verdicts)) == 1


@needs_bwrap
def test_a_check_that_times_out_or_floods_the_checker_costs_only_its_own_verdict(one):
    loops = "def f(x):\n    while True:\n        pass\n"
    verdicts = one.verify([he()], [loops])
    assert (verdicts[0].reward, verdicts[0].status) == (0.0, "timeout")
    assert honest_after(one) == [1.0, 0.0]
    flood = "def f(x):\n    return 'a' * (48 << 20)\n"
    assert rewards(one, [(he(), flood)]) == [0.0]
    assert honest_after(one) == [1.0, 0.0]
    dies = "import os\ndef f(x):\n    os._exit(0)\n"
    assert rewards(one, [(he(), dies)]) == [0.0]
    assert honest_after(one) == [1.0, 0.0]


@needs_bwrap
def test_a_check_only_worker_still_judges_bigcodebench_with_unittest_mock(one):
    right = "def task_func(x):\n    return x + 1\n"
    wrong = "def task_func(x):\n    return x\n"
    assert rewards(one, [(bcb(), right), (bcb(), wrong)]) == [1.0, 0.0]
    replaced = ("import sys, types\nsys.modules['unittest.mock'] = types.ModuleType('m')\n"
                + wrong)
    assert rewards(one, [(bcb(), replaced)]) == [0.0]
    assert honest_after(one) == [1.0, 0.0]


LOOPS_F = "def f(x):\n    while True:\n        pass\n"


def judged_without_a_checker_uid(domain: str) -> list[tuple[float, str]]:
    """Four check jobs on one worker with no uid of its own for the checker (as root here,
    the worker is made so, as an ordinary user's sandbox is)."""
    problem = Problem(problem_id="p", domain=domain, prompt="", init_code="", tests=CHECK_F,
                      entry_point="f", io_mode="check")
    with Verifier(workers=1, limits=Limits(timeout=2.0), domains=[domain]) as v:
        worker = v.pool.acquire()
        worker.uid = worker.checker_uid = None
        v.pool.release(worker)
        verdicts = v.verify([problem] * 4, [GOOD_F, WRONG_F, LOOPS_F, GOOD_F])
    return [(x.reward, x.status) for x in verdicts]


@needs_bwrap
def test_without_a_checker_uid_the_persistent_checker_still_judges_right():
    # In bubblewrap's PID namespace the checker is kept between jobs even with the programs'
    # uid: whatever a program does to it ends with its job, and the server checks it after.
    assert judged_without_a_checker_uid("humaneval") == [
        (1.0, "passed"), (0.0, "failed"), (0.0, "timeout"), (1.0, "passed")]


def test_without_a_checker_uid_or_a_pid_namespace_a_fresh_checker_per_job_judges_right(
        monkeypatch):
    # Under rlimits a job's lingering processes cannot all be found: they could signal a
    # persistent checker during later jobs, so each check job forks its own.
    monkeypatch.setattr(isolation, "_bwrap_problem", lambda: "bwrap is not installed")
    assert judged_without_a_checker_uid("toy") == [
        (1.0, "passed"), (0.0, "failed"), (0.0, "timeout"), (1.0, "passed")]


def test_ds1000_libraries_a_test_imports_are_imported_before_its_job_is_forked():
    from restrl.sandbox.server import warm_imports

    context = ("import numpy as np\nfrom scipy import sparse, stats\nfrom sklearn.svm import SVC\n"
               "import torch\nimport numpyish\nimport matplotlib.pyplot as plt\n"
               'exec_context = r"""\n    import pandas as pd\n"""\n')
    assert warm_imports(context) == ["numpy", "scipy", "scipy.sparse", "scipy.stats",
                                      "sklearn.svm", "torch", "pandas"]


@pytest.mark.parametrize("domains", [["ds1000"], ["ds1000", "humaneval"]])
def test_a_ds1000_job_finds_its_tests_libraries_loaded_only_in_a_pool_of_library_domains(
        domains):
    # Forked from a process that imported what the test imports; not where other domains'
    # jobs (with their smaller memory limit) are forked from the same process.
    context = ('import copy\nfrom scipy import sparse\n'
               'def generate_test_case(i):\n    return 0, True\n\n'
               'def exec_test(result, ans):\n    return result == ans\n\n'
               'exec_context = r"""\n[insert]\n"""\n\n'
               'def test_execution(solution: str):\n'
               '    code = exec_context.replace("[insert]", solution)\n'
               '    test_input, expected_result = generate_test_case(1)\n'
               '    test_env = {"test_input": test_input}\n'
               '    exec(code, test_env)\n'
               '    assert exec_test(test_env["result"], expected_result)\n')
    program = "import sys\nresult = 'scipy.sparse' in sys.modules\n"
    problem = Problem(problem_id="d", domain="ds1000", prompt="", init_code="", tests=context,
                      io_mode="ds1000")
    with Verifier(workers=1, limits=Limits(timeout=5.0), domains=domains) as verifier:
        assert rewards(verifier, [(problem, program)]) == [1.0 if domains == ["ds1000"] else 0.0]
