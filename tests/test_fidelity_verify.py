"""The verifier computes the original ReST-RL rewards by default (REFERENCE.md section 2).

Small hand-made problems in the real formats: APPS tests JSON, BigCodeBench `TestCases`,
DS1000 `code_context`. Hostile variants check that the new unittest semantics cannot be gamed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from restrl.problems import Problem
from restrl.sandbox import Limits, Verifier
from restrl.sandbox.checkers import (
    APPS_IMPORT_HEADER,
    CheckOptions,
    check_program,
    ds1000_solution,
    reference_call_matches,
    reference_stdout_matches,
    strict_stdout_matches,
)
from restrl.sandbox.pool import SandboxPool
from restrl.sandbox.server import decode_value, encode_value


@pytest.fixture(scope="module")
def verifier():
    with Verifier(workers=2, limits=Limits(timeout=2.0)) as v:
        yield v


def apps(inputs: list, outputs: list, fn_name: str = "") -> Problem:
    spec = {"inputs": inputs, "outputs": outputs, **({"fn_name": fn_name} if fn_name else {})}
    return Problem(problem_id="a", domain="apps", prompt="", init_code="", tests=json.dumps(spec),
                   entry_point=fn_name, io_mode="call" if fn_name else "stdio")


def bcb(tests: str) -> Problem:
    return Problem(problem_id="b", domain="bigcodebench", prompt="", init_code="", tests=tests,
                   entry_point="task_func", io_mode="unittest")


def ds1000(code_context: str, init: str = "") -> Problem:
    return Problem(problem_id="d", domain="ds1000", prompt="", init_code=init, tests=code_context,
                   io_mode="ds1000")


def rewards(verifier: Verifier, cases: list[tuple[Problem, str]]) -> list[float]:
    return [round(v.reward, 6) for v in verifier.verify([c[0] for c in cases],
                                                        [c[1] for c in cases])]


# ----------------------------------------------------------------------------- limits


def test_default_time_and_memory_limits_come_from_limits_per_io_mode():
    limits = Limits()
    assert [limits.seconds(m) for m in ("stdio", "call", "check")] == [4.0, 4.0, 4.0]
    assert [limits.seconds(m) for m in ("unittest", "ds1000")] == [60.0, 60.0]
    assert limits.memory("stdio") == 2 << 30 and limits.memory("unittest") == 16 << 30
    assert limits.memory("ds1000") == 16 << 30
    assert limits.for_job("unittest")["wall_seconds"] == 61.0


# ----------------------------------------------------------------------------- APPS


def test_apps_import_header_names_work_without_imports(verifier):
    uses = ("print(sqrt(16) + gcd(4, 6) + len(Counter('aab')) + len(list(permutations([1, 2]))))\n"
            "h = []\nheappush(h, 3)\nprint(h[0], math.floor(2.5), List is not None)\n")
    call = "def f(xs):\n    return sorted(Counter(xs).values())\n"
    assert rewards(verifier, [(apps(["\n"], ["10.0\n3 2 True\n"]), uses),
                              (apps([[["a", "b", "a"]]], [[1, 2]], "f"), call)]) == [1.0, 1.0]


def test_apps_import_header_works_without_numpy():
    code = ("import sys\nsys.modules['numpy'] = None\n"
            f"exec(compile({APPS_IMPORT_HEADER!r}, 'h', 'exec'))\nprint('np' in dir(), heappush)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("False <built-in function heappush>")


def test_apps_stdout_accepts_stripped_text_and_stripped_non_empty_lines():
    assert reference_stdout_matches("  1 2  \n", "1 2")
    assert reference_stdout_matches("a\n\nb\n", "a\nb\n")
    assert reference_stdout_matches(" a \n b \n", "a\nb")


def test_apps_stdout_accepts_number_lines_that_are_allclose():
    assert reference_stdout_matches("0.3333333\n2\n", "0.33333333\n2.0\n")
    assert not reference_stdout_matches("0.34\n", "0.33\n")


def test_apps_stdout_accepts_each_line_as_a_set_of_tokens():
    assert reference_stdout_matches("3 1 2 2\n", "1 2 3\n")  # order and repeats ignored
    assert reference_stdout_matches("b a\nc\n", "c\na b\n")  # so is the order of lines
    assert reference_stdout_matches("1.00001 2\n", "1.0 2\n")  # numbers to 3 places
    assert not reference_stdout_matches("1 2\n", "1 2 3\n")


def test_apps_strict_option_keeps_the_exact_token_rule(verifier):
    problem, program = apps(["\n"], ["1 2 3\n"]), "print('3 2 1')\n"
    assert not strict_stdout_matches("3 2 1\n", "1 2 3\n")
    with Verifier(workers=1, options=CheckOptions(apps_compare="strict")) as strict:
        assert strict.verify([problem], [program])[0].reward == 0.0
    assert verifier.verify([problem], [program])[0].reward == 1.0
    with pytest.raises(ValueError, match="apps_compare"):
        CheckOptions(apps_compare="loose")


def test_apps_list_inputs_and_outputs_are_joined_with_newlines(verifier):
    program = "a = int(input())\nb = int(input())\nprint(a + b)\nprint(a * b)\n"
    assert rewards(verifier, [(apps([["2", "3"]], [["5", "6"]]), program)]) == [1.0]


def test_apps_script_runs_as_main_so_guards_and_global_work(verifier):
    program = ("total = 0\ndef add(x):\n    global total\n    total += x\n"
               "if __name__ == '__main__':\n    add(int(input()))\n    print(total)\n")
    assert rewards(verifier, [(apps(["4\n"], ["4\n"]), program)]) == [1.0]


def test_apps_script_ending_in_nonzero_sys_exit_is_judged_on_its_output(verifier):
    program = "import sys\nprint(7)\nsys.exit(1)\n"
    assert rewards(verifier, [(apps(["\n"], ["7\n"]), program)]) == [1.0]
    with Verifier(workers=1, options=CheckOptions(apps_compare="strict")) as strict:
        assert strict.verify([apps(["\n"], ["7\n"])], [program])[0].reward == 0.0


def test_apps_timeout_scores_that_test_zero_and_later_tests_still_run():
    problem = apps(["loop\n", "1\n", "2\n"], ["x\n", "1\n", "2\n"])
    program = "s = input()\nwhile s == 'loop':\n    pass\nprint(s)\n"
    with Verifier(workers=1, limits=Limits(timeout=0.5)) as v:
        verdict = v.verify([problem], [program])[0]
    assert (round(verdict.reward, 6), verdict.tests_passed, verdict.status) == (0.666667, 2,
                                                                                 "timeout")


def test_apps_tests_that_together_run_past_the_job_timeout_score_zero():
    problem = apps(["\n"] * 4, ["1\n"] * 4)
    program = "import time\ntime.sleep(0.8)\nprint(1)\n"
    with Verifier(workers=1, limits=Limits(timeout=2.0, job_timeout=1.0)) as v:
        verdict = v.verify([problem], [program])[0]
    assert (verdict.reward, verdict.status) == (0.0, "timeout")
    assert "together" in verdict.error


def test_apps_program_that_does_not_compile_scores_zero_after_one_run():
    jobs = []
    with SandboxPool(1) as pool:
        def run(job):
            jobs.append(job)
            return pool.run(job)

        verdict = check_program(apps(["1\n"] * 5, ["1\n"] * 5), "print(1\n", run, Limits(), "x")
    assert (verdict.reward, verdict.status, len(jobs)) == (0.0, "error", 1)
    assert "does not load" in verdict.error


def test_call_based_accepts_the_first_element_of_the_expected_output(verifier):
    assert reference_call_matches(3, [3])
    assert reference_call_matches([1, 2], [[1, 2]])
    program = "def f(a, b):\n    return a + b\n"
    assert rewards(verifier, [(apps([[1, 2], [2, 2]], [[3], 4], "f"), program)]) == [1.0]


def test_call_based_tuples_become_lists_also_inside_a_list(verifier):
    cases = [(apps([[2]], [[1, 2]], "f"), "def f(n):\n    return (1, n)\n"),
             (apps([[2]], [[[1, 2], [3, 4]]], "f"), "def f(n):\n    return [(1, n), (3, 4)]\n")]
    assert rewards(verifier, cases) == [1.0, 1.0]


def test_call_based_dict_keys_in_inputs_and_outputs_become_ints(verifier):
    program = ("def f(d):\n    assert all(type(k) is int for k in d)\n"
               "    return {k + 1: v for k, v in d.items()}\n")
    problem = apps([[{"1": "a", "2": "b"}]], [{"2": "a", "3": "b"}], "f")
    assert rewards(verifier, [(problem, program)]) == [1.0]
    assert decode_value(encode_value({1: (2, 3), "x": None})) == {1: [2, 3], "x": None}


def test_call_based_numpy_scalars_compare_as_numbers(verifier):
    pytest.importorskip("numpy")
    program = "def f(xs):\n    return np.int64(sum(xs)), np.float64(0.5), np.bool_(True)\n"
    assert rewards(verifier, [(apps([[[1, 2]]], [[3, 0.5, True]], "f"), program)]) == [1.0]


def test_call_based_results_keep_their_types(verifier):
    assert not reference_call_matches(True, [1])
    assert rewards(verifier, [(apps([[1]], [1], "f"), "def f(x):\n    return True\n")]) == [0.0]


def test_class_solution_is_a_real_class_not_the_text(verifier):
    method = "class Solution:\n    def f(self, x):\n        return x * 2\n"
    comment = "# class Solution would be a method\ndef f(x):\n    return x * 2\n"
    problem = apps([[2]], [4], "f")
    assert rewards(verifier, [(problem, method), (problem, comment)]) == [1.0, 1.0]


def test_programs_do_not_inherit_the_servers_future_annotations(verifier):
    program = "def f(x: int):\n    return x\nprint(f.__annotations__['x'] is int)\n"
    tests = ("import unittest\nclass TestCases(unittest.TestCase):\n"
             "    def test_a(self):\n        self.assertIs(task_func.__annotations__['x'], int)\n")
    cases = [(apps(["\n"], ["True\n"]), program),
             (bcb(tests), "def task_func(x: int):\n    return x\n")]
    assert rewards(verifier, cases) == [1.0, 1.0]


# ----------------------------------------------------------------------------- BigCodeBench

SKIPS = """import unittest
class TestCases(unittest.TestCase):
    def test_a(self):
        self.assertEqual(task_func(), 1)
    @unittest.skip("not on this platform")
    def test_b(self):
        self.assertEqual(task_func(), 2)
    def test_c(self):
        self.skipTest("optional")
    def test_d(self):
        self.assertEqual(task_func(), 3)
"""

INHERITED = """import unittest
class Base(unittest.TestCase):
    def test_a(self):
        self.assertEqual(task_func(1), 2)
class TestCases(Base):
    def test_b(self):
        self.assertEqual(task_func(2), 3)
"""


def test_bigcodebench_skipped_tests_count_as_passed(verifier):
    v = verifier.verify([bcb(SKIPS)], ["def task_func():\n    return 1\n"])[0]
    assert (v.reward, v.tests_passed, v.tests_total) == (0.75, 3, 4)


def test_bigcodebench_inherited_test_methods_count(verifier):
    good, half = verifier.verify([bcb(INHERITED)] * 2, ["def task_func(x):\n    return x + 1\n",
                                                        "def task_func(x):\n    return 2\n"])
    assert (good.reward, good.tests_total, half.reward, half.tests_passed) == (1.0, 2, 0.5, 1)


def test_bigcodebench_reward_is_run_minus_failures_minus_errors(verifier):
    tests = ("import unittest\nclass TestCases(unittest.TestCase):\n"
             "    def test_a(self):\n        for x in (1, 2, 3):\n"
             "            with self.subTest(x=x):\n"
             "                self.assertEqual(task_func(x), 0)\n"
             "    def test_b(self):\n        self.assertEqual(task_func(0), 0)\n"
             "    def test_c(self):\n        self.assertEqual(task_func(0), 0)\n")
    # test_a adds two failures (x = 2, 3): (3 run - 2 failures) / 3 tests.
    program = "def task_func(x):\n    return 0 if x < 2 else x\n"
    assert rewards(verifier, [(bcb(tests), program)]) == [0.333333]


def test_bigcodebench_suite_has_one_time_limit_for_all_its_tests():
    tests = ("import unittest\nclass TestCases(unittest.TestCase):\n"
             + "".join(f"    def test_{i}(self):\n        self.assertEqual(task_func(), 1)\n"
                       for i in range(3)))
    program = "import time\ndef task_func():\n    time.sleep(0.7)\n    return 1\n"
    with Verifier(workers=1, limits=Limits(timeout=0.5, job_timeout=5.0)) as v:
        assert v.verify([bcb(tests)], [program])[0].reward == 1.0  # no limit per test
    with Verifier(workers=1, limits=Limits(job_timeout=0.5)) as v:
        assert v.verify([bcb(tests)], [program])[0].status == "timeout"


def test_bigcodebench_teardown_can_remove_a_temporary_directory(verifier):
    tests = ("import os, shutil, tempfile, unittest\nclass TestCases(unittest.TestCase):\n"
             "    def setUp(self):\n        self.dir = tempfile.mkdtemp()\n"
             "    def tearDown(self):\n        shutil.rmtree(self.dir)\n"
             "    def test_a(self):\n        self.assertTrue(task_func(self.dir))\n")
    program = ("import os\ndef task_func(d):\n    open(os.path.join(d, 'f.txt'), 'w').write('x')\n"
               "    return True\n")
    assert rewards(verifier, [(bcb(tests), program)]) == [1.0]


def test_bigcodebench_program_may_use_names_the_tests_import(verifier):
    tests = ("import unittest\nimport collections\nclass TestCases(unittest.TestCase):\n"
             "    def test_a(self):\n        self.assertEqual(task_func('aab')['a'], 2)\n")
    assert rewards(verifier, [(bcb(tests), "def task_func(s):\n"
                                           "    return collections.Counter(s)\n")]) == [1.0]


@pytest.mark.parametrize("raising", [
    "import unittest\n    raise unittest.SkipTest('no')",
    "import unittest.case\n    raise unittest.case._ShouldStop()",
])
def test_bigcodebench_program_cannot_skip_or_stop_its_way_to_a_pass(verifier, raising):
    tests = ("import unittest\nclass TestCases(unittest.TestCase):\n"
             "    def test_a(self):\n        self.assertEqual(task_func(), 1)\n"
             "    def test_b(self):\n        for x in (1, 2):\n"
             "            with self.subTest(x=x):\n"
             "                self.assertEqual(task_func(), 1)\n")
    v = verifier.verify([bcb(tests)], [f"def task_func():\n    {raising}\n"])[0]
    assert v.reward == 0.0


def test_bigcodebench_program_cannot_replace_or_shadow_the_tests(verifier):
    tests = ("import unittest\ndef expect(x):\n    assert x == 1\n"
             "class Base(unittest.TestCase):\n    def test_a(self):\n        expect(task_func())\n"
             "class TestCases(Base):\n"
             "    def test_b(self):\n        self.assertEqual(task_func(), 1)\n")
    programs = [
        "TestCases.test_b = lambda self: None\ndef task_func():\n    return 0\n",
        "TestCases.test_a = lambda self: None\ndef task_func():\n    return 0\n",
        "TestCases.assertEqual = lambda *a: None\ndef task_func():\n    return 0\n",
        "def task_func():\n    task_func.__globals__['TestCases'].__unittest_skip__ = True\n"
        "    return 0\n",
    ]
    verdicts = verifier.verify([bcb(tests)] * 4, programs)
    assert [v.reward for v in verdicts] == [0.0] * 4
    assert [v.status for v in verdicts[:3]] == ["invalid"] * 3
    # A program's own `expect` does not replace the test code's.
    own = "def expect(x):\n    pass\ndef task_func():\n    return 0\n"
    assert rewards(verifier, [(bcb(tests), own)]) == [0.0]


def test_bigcodebench_forged_unit_reports_do_not_fake_a_pass(verifier):
    forge = ("import sys, __main__\n"
             "def task_func():\n    sys.audit('restrl.unit', 'success', None)\n"
             "    __main__._unit_report('success', None)\n    return 0\n")
    tests = ("import unittest\nclass TestCases(unittest.TestCase):\n"
             "    def test_a(self):\n        self.assertEqual(task_func(), 1)\n")
    v = verifier.verify([bcb(tests)], [forge])[0]
    assert (v.reward, v.status) == (0.0, "invalid")


LIBRARY_USES = {  # what a BigCodeBench program does with each library, if it is installed
    "scipy": "    import scipy.stats\n    scipy.stats.norm.cdf(0.5)\n",
    "sklearn": "    from sklearn.linear_model import LinearRegression\n"
               "    LinearRegression().fit(np.random.rand(50, 3), np.random.rand(50))\n",
    "matplotlib": "    import matplotlib.pyplot as plt\n    plt.plot([1, 2])\n"
                  "    plt.savefig('plot.png')\n",
    "torch": "    import torch\n    (torch.randn(300, 300) @ torch.randn(300, 300)).sum()\n",
}


def test_bigcodebench_data_library_program_fits_the_default_memory_limit():
    """The libraries together, with a thread pool, need more than 2 GiB of address space."""
    pytest.importorskip("numpy")
    pytest.importorskip("pandas")
    uses = "".join(code for name, code in LIBRARY_USES.items()
                   if importlib.util.find_spec(name) is not None)
    program = ("import numpy as np\nimport pandas as pd\n"
               "from concurrent.futures import ThreadPoolExecutor\n"
               "def task_func():\n    pd.DataFrame(np.random.rand(100, 4)).describe()\n" + uses
               + "    with ThreadPoolExecutor(16) as pool:\n"
                 "        return sum(pool.map(lambda i: len(bytearray(1 << 20)), range(64)))\n")
    tests = ("import unittest\nclass TestCases(unittest.TestCase):\n"
             "    def test_a(self):\n        self.assertEqual(task_func(), 64 << 20)\n")
    with Verifier(workers=1, domains=["bigcodebench"]) as v:
        verdict = v.verify([bcb(tests)], [program])[0]
    assert (verdict.reward, verdict.error) == (1.0, "")


# ----------------------------------------------------------------------------- DS1000

CONTEXT = '''
def generate_test_case(test_case_id):
    return [1, 2, 3], 6


def exec_test(result, ans):
    return result == ans


exec_context = r"""
numbers = test_input
[insert]
"""


def test_execution(solution: str):
    code = exec_context.replace("[insert]", solution)
    test_input, expected_result = generate_test_case(1)
    test_env = {"test_input": test_input}
    exec(code, test_env)
    assert exec_test(test_env["result"], expected_result)
'''

NO_INIT_TWICE = CONTEXT + '''

def test_string(solution: str):
    assert "numbers = [" not in solution
'''


def test_ds1000_solution_is_the_program_after_its_initial_code(verifier):
    init = "numbers = [1, 2, 3]\n"
    assert ds1000_solution(ds1000(CONTEXT, init), init + "result = 6\n") == "result = 6\n"
    assert ds1000_solution(ds1000(CONTEXT, ""), "result = 6\n") == "result = 6\n"
    cases = [(ds1000(NO_INIT_TWICE, init), init + "result = sum(numbers)\n"),
             (ds1000(NO_INIT_TWICE, ""), init + "result = sum(numbers)\n"),
             (ds1000(CONTEXT, ""), "result = sum(numbers)\n")]
    assert rewards(verifier, cases) == [1.0, 0.0, 1.0]
