"""Programs written to cheat, leak or harm their neighbours: each must score 0 (or its own
right verdict), and honest programs judged after them in the same worker must be judged right.

Run inside a PID namespace (a failed isolation would let `kill(-1)` reach every process):
    unshare --pid --fork --mount-proc python -m pytest tests/test_sandbox_hostile.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import uuid
from pathlib import Path

import pytest
from conftest import run_as_ordinary_user

from restrl.problems import Problem, read_humaneval
from restrl.problems.humaneval import default_humaneval_path
from restrl.sandbox import Limits, Verifier, isolation
from restrl.sandbox.checkers import CheckOptions
from restrl.sandbox.isolation import IsolationUnavailable, bwrap_works
from restrl.sandbox.pool import start_pool

FIXTURES = Path(__file__).parent / "fixtures" / "problems"
CHECK_F = "def check(candidate):\n    assert candidate(2) == 3\n    assert candidate(5) == 6\n"
GOOD_F = "def f(x):\n    return x + 1\n"
WRONG_F = "def f(x):\n    return x\n"
BCB_TESTS = ("import unittest\nclass TestCases(unittest.TestCase):\n"
             "    def test_a(self):\n        self.assertEqual(task_func(2), 3)\n"
             "    def test_b(self):\n        self.assertEqual(task_func(5), 6)\n")
WRONG_TASK = "def task_func(x):\n    return x\n"

needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="needs working bubblewrap")


def he(pid: str = "p", tests: str = CHECK_F) -> Problem:
    return Problem(problem_id=pid, domain="humaneval", prompt="", init_code="", tests=tests,
                   entry_point="f", io_mode="check")


def bcb() -> Problem:
    return Problem(problem_id="b", domain="bigcodebench", prompt="", init_code="",
                   tests=BCB_TESTS, entry_point="task_func", io_mode="unittest")


def stdio(expected: str) -> Problem:
    return Problem(problem_id="s", domain="apps", prompt="", init_code="", entry_point="",
                   tests=json.dumps({"inputs": ["\n"], "outputs": [expected]}), io_mode="stdio")


@pytest.fixture(scope="module")
def one():
    """One worker: every job of a test runs after the previous one in the same server."""
    with Verifier(workers=1, limits=Limits(timeout=2.0)) as v:
        yield v


def rewards(verifier: Verifier, cases: list[tuple[Problem, str]]) -> list[float]:
    return [v.reward for v in verifier.verify([c[0] for c in cases], [c[1] for c in cases])]


def honest_after(verifier: Verifier) -> list[float]:
    """A correct and a wrong program, judged after something hostile: must be 1 and 0."""
    return rewards(verifier, [(he(), GOOD_F), (he(), WRONG_F)])


# ----------------------------------------------------------------------------- forging a pass

FRAME_TOKEN_FORGER = """
import os, sys
seen = set()
frame = sys._getframe()
while frame is not None:
    for value in list(frame.f_locals.values()):
        if isinstance(value, (bytes, str)) and 16 <= len(value) <= 64:
            seen.add(value.encode() if isinstance(value, str) else value)
    frame = frame.f_back
for fd in range(3, 64):
    for token in seen:
        try:
            os.write(fd, token + b" ok 2 2 11 \\n")
        except OSError:
            pass
"""


def test_token_found_by_walking_frames_does_not_forge_a_pass(one):
    assert rewards(one, [(bcb(), FRAME_TOKEN_FORGER + WRONG_TASK),
                         (he(), FRAME_TOKEN_FORGER + WRONG_F)]) == [0.0, 0.0]
    assert honest_after(one) == [1.0, 0.0]


HOOK_REENTRY = """
import builtins, sys
class Key(str):
    def __hash__(self):
        return hash(str(self))
    def __eq__(self, other):
        frame = sys._getframe(1)
        while frame is not None:
            for name in ("outcomes", "succeeded", "started"):
                cells = frame.f_locals.get(name)
                if isinstance(cells, list):
                    cells[:] = [True if isinstance(c, bool) else "1" for c in cells]
            state = frame.f_locals.get("state")
            if isinstance(state, dict):
                state["bad"] = ""
            frame = frame.f_back
        return str.__eq__(self, other)
for name in ("isinstance", "len", "type", "RuntimeError", "max", "min", "range", "sum"):
    value = getattr(builtins, name)
    delattr(builtins, name)
    vars(builtins)[Key(name)] = value
"""


def test_hook_reentry_through_a_planted_builtins_key_does_not_forge_a_pass(one):
    verdicts = one.verify([bcb(), he()], [HOOK_REENTRY + WRONG_TASK, HOOK_REENTRY + WRONG_F])
    assert [v.reward for v in verdicts] == [0.0, 0.0]
    assert honest_after(one) == [1.0, 0.0]


CTYPES_FLIP = """
import ctypes
# Make the int 3 read as 2 in this process: an in-process `candidate(2) == 3` would hold.
ctypes.c_long.from_address(id(3) + 24).value = 2
"""


def test_ctypes_memory_writes_do_not_change_a_humaneval_comparison(one):
    assert rewards(one, [(he(), CTYPES_FLIP + WRONG_F)]) == [0.0]
    assert honest_after(one) == [1.0, 0.0]


def test_forged_eq_keys_and_return_values_do_not_pass(one):
    planted_key = ("class K(str):\n    def __hash__(self):\n        return hash('f')\n"
                   "    def __eq__(self, other):\n        return True\n"
                   "globals()[K('f')] = lambda x: x\n" + WRONG_F)
    always_eq = ("class Yes(int):\n    def __eq__(self, other):\n        return True\n"
                 "def f(x):\n    return Yes(0)\n")
    assert rewards(one, [(he(), planted_key), (he(), always_eq)]) == [0.0, 0.0]


def test_shadowed_builtins_do_not_reach_the_humaneval_check(one):
    tests = ("def check(candidate):\n    assert all([candidate(2) == 3])\n"
             "    assert abs(candidate(5) - 6) < 1e-9\n")
    program = ("import builtins\nbuiltins.all = lambda xs: True\nbuiltins.abs = lambda x: 0\n"
               "builtins.AssertionError = type('Nothing', (BaseException,), {})\n" + WRONG_F)
    assert rewards(one, [(he(tests=tests), program), (he(tests=tests), GOOD_F)]) == [0.0, 1.0]


def test_replacing_unittest_in_sys_modules_does_not_fake_a_bigcodebench_pass(one):
    program = ("import sys, types\nfake = types.ModuleType('unittest')\n"
               "fake.TestCase = object\nsys.modules['unittest'] = fake\n"
               "sys.modules['unittest.case'] = fake\n" + WRONG_TASK)
    assert rewards(one, [(bcb(), program)]) == [0.0]


def test_humaneval_expected_values_are_not_in_the_programs_process(one):
    reader = """
import sys
def f(x):
    frame = sys._getframe()
    while frame is not None:
        for scope in (frame.f_locals, frame.f_globals):
            check = scope.get("check")
            if check is not None:
                consts = [c for c in check.__code__.co_consts if isinstance(c, int)]
                return consts[consts.index(x) + 1]
        frame = frame.f_back
    return None
"""
    assert rewards(one, [(he(), reader)]) == [0.0]


TEST_CODE_READER = """
import re, sys
def _find():
    frame = sys._getframe()
    while frame is not None:
        for value in list(frame.f_locals.values()):
            for item in (value.values() if isinstance(value, dict) else [value]):
                if isinstance(item, str) and "def check(" + "candidate)" in item:
                    return item
        frame = frame.f_back
    return ""
TESTS = _find()
def f(x):
    found = re.search(r"candidate\\(%d\\) == (\\d+)" % x, TESTS)
    return int(found.group(1)) if found else None
"""


def test_humaneval_test_code_is_not_in_the_programs_frames(one):
    # The job the program's process is forked for carries the program, never the tests.
    assert rewards(one, [(he(), TEST_CODE_READER)]) == [0.0]
    assert honest_after(one) == [1.0, 0.0]


# BigCodeBench's tests run in the program's process (unittest with mocks): what the README's
# sandbox section states as the residual risk there, pinned so that a change to it is seen.
CTYPES_CONSTANT_WRITER = """
import ctypes
class _U(ctypes.Union):
    _fields_ = [("p", ctypes.POINTER(ctypes.c_uint32)), ("i", ctypes.c_size_t)]
def _poke(obj, value):
    u = _U()
    u.i = id(obj) + 24  # the first digit of an int (CPython 3.11, 64-bit)
    u.p[0] = value
for _name in ("test_a", "test_b"):
    for _const in getattr(TestCases, _name).__code__.co_consts:
        if type(_const) is int and _const > 1000:
            _poke(_const, _const - 1001)
def task_func(x):
    return x
"""
ALWAYS_EQUAL = ("class _Any:\n    def __eq__(self, other):\n        return True\n"
                "def task_func(x):\n    return _Any()\n")


def test_residual_risk_bigcodebench_ctypes_writes_into_the_tests_memory_forge_a_pass(one):
    # ctypes pointers raise no audit event: the test's expected constants are rewritten.
    tests = BCB_TESTS.replace("), 3)", "), 1003)").replace("), 6)", "), 1006)")
    problem = Problem(problem_id="b", domain="bigcodebench", prompt="", init_code="",
                      tests=tests, entry_point="task_func", io_mode="unittest")
    assert rewards(one, [(problem, CTYPES_CONSTANT_WRITER)]) == [1.0]
    assert rewards(one, [(problem, WRONG_TASK)]) == [0.0]


def test_residual_risk_bigcodebench_an_always_equal_result_passes_assert_equal(one):
    # unittest's assertEqual asks the result's own __eq__, as in the original harness.
    assert rewards(one, [(bcb(), ALWAYS_EQUAL)]) == [1.0]
    assert rewards(one, [(bcb(), WRONG_TASK)]) == [0.0]


# ----------------------------------------------------------------------------- DS1000
# code_context runs in the checker, the solution in the program's process: `exec(code,
# test_env)` carries test_env there and the names it leaves back, as data.

def ds1000(context: str) -> Problem:
    return Problem(problem_id="d", domain="ds1000", prompt="", init_code="", tests=context,
                   io_mode="ds1000")


DS1000_CONTEXT = '''{setup}
{cases}

def exec_test(result, ans):
{check}

exec_context = r"""
{setup}
x = test_input
[insert]
"""

def test_execution(solution: str):
    code = exec_context.replace("[insert]", solution)
    for i in range(1, 3):
        test_input, expected_result = generate_test_case(i)
        test_env = {{"test_input": test_input}}
        exec(code, test_env)
        assert exec_test(test_env["result"], expected_result)
'''


def ds1000_context(setup: str, cases: str, check: str) -> str:
    """A DS1000 code_context in the dataset's shape: `cases` defines `generate_test_case`."""
    return DS1000_CONTEXT.format(setup=setup, cases=cases, check=check)


PLAIN_CASES = "def generate_test_case(i):\n    return [i, 5], [i, 5, i + 5]\n"
PLAIN_DS1000 = ds1000_context("import copy", PLAIN_CASES, "    return result == ans")
PLAIN_GOOD, PLAIN_WRONG = "result = x + [sum(x)]\n", "result = x\n"
EXPECTED_FROM_FRAMES = """
import sys
f = sys._getframe()
while f is not None and "expected_result" not in f.f_locals:
    f = f.f_back
result = f.f_locals["expected_result"]
"""
TESTS_SWAPPED_THROUGH_FRAMES = """
import sys
f = sys._getframe()
while f is not None:
    f.f_globals["exec_test"] = lambda result, ans: True
    f.f_globals["generate_test_case"] = lambda i: (0, None)
    f = f.f_back
result = None
"""
ALWAYS_EQUAL_RESULT = ("class _Any:\n    def __eq__(self, other):\n        return True\n"
                       "result = _Any()\n")
CTYPES_EXPECTED_WRITER = """
import ctypes, sys
class _U(ctypes.Union):
    _fields_ = [("p", ctypes.POINTER(ctypes.c_uint32)), ("i", ctypes.c_size_t)]
f = sys._getframe()
while f is not None:
    for const in f.f_code.co_consts:
        if type(const) is int and const > 1000:
            u = _U()
            u.i = id(const) + 24  # the first digit of an int (CPython 3.11, 64-bit)
            u.p[0] = 5
    f = f.f_back
result = x
"""


def ds1000_honest_after(verifier: Verifier) -> list[float]:
    return rewards(verifier, [(ds1000(PLAIN_DS1000), PLAIN_GOOD),
                              (ds1000(PLAIN_DS1000), PLAIN_WRONG)])


def test_ds1000_expected_result_is_not_in_the_programs_process(one):
    assert rewards(one, [(ds1000(PLAIN_DS1000), EXPECTED_FROM_FRAMES)]) == [0.0]
    assert ds1000_honest_after(one) == [1.0, 0.0]


def test_ds1000_test_code_swapped_through_frames_does_not_pass(one):
    assert rewards(one, [(ds1000(PLAIN_DS1000), TESTS_SWAPPED_THROUGH_FRAMES)]) == [0.0]
    assert ds1000_honest_after(one) == [1.0, 0.0]


def test_ds1000_an_always_equal_result_does_not_pass(one):
    # Only data leaves the sandbox: the object with the forged __eq__ stays behind.
    verdict, = one.verify([ds1000(PLAIN_DS1000)], [ALWAYS_EQUAL_RESULT])
    assert verdict.reward == 0.0
    assert "not carried out of the sandbox: result (_Any)" in verdict.error


def test_ds1000_ctypes_writes_do_not_reach_the_expected_result(one):
    context = ds1000_context("import copy", "def generate_test_case(i):\n    return 5, 1006\n",
                             "    return result == ans")
    assert rewards(one, [(ds1000(context), CTYPES_EXPECTED_WRITER)]) == [0.0]
    assert rewards(one, [(ds1000(context), "result = x + 1001\n")]) == [1.0]


LIBRARY_CASES = {
    "numpy": ("import numpy as np",
              "def generate_test_case(i):\n    a = np.arange(6.0).reshape(2, 3) * i\n"
              "    return a, a.T.copy()\n",
              "    np.testing.assert_array_equal(result, ans)\n"
              "    return result.dtype == ans.dtype",
              "result = x.T\n", "result = x\n"),
    "pandas": ("import numpy as np\nimport pandas as pd",
               "def generate_test_case(i):\n"
               "    df = pd.DataFrame({'a': [1, 2, i], 'b': [4.0, np.nan, 6.0]},\n"
               "                      index=list('xyz'))\n"
               "    return df, df.fillna(0).cumsum()\n",
               "    pd.testing.assert_frame_equal(result, ans)\n    return True",
               "result = x.fillna(0).cumsum()\n", "result = x.cumsum()\n"),
    "scipy": ("import numpy as np\nfrom scipy import sparse",
              "def generate_test_case(i):\n    m = sparse.csr_matrix(np.eye(3) * i)\n"
              "    return m, m.T.tocsr() * 2\n",
              "    return type(result) is type(ans) and (result != ans).nnz == 0",
              "result = (x.T * 2).tocsr()\n", "result = x.T.tocsr()\n"),
    "torch": ("import torch",
              "def generate_test_case(i):\n    t = torch.arange(4.0) + i\n"
              "    return t, t.cumsum(0)\n",
              "    return torch.equal(result, ans)",
              "result = x.cumsum(0)\n", "result = x\n"),
}


@pytest.mark.parametrize("library", sorted(LIBRARY_CASES))
def test_ds1000_library_results_are_judged_out_of_process(one, library):
    pytest.importorskip(library)
    setup, cases, check, good, wrong = LIBRARY_CASES[library]
    problem = ds1000(ds1000_context(setup, cases, check))
    assert rewards(one, [(problem, good), (problem, wrong), (problem, EXPECTED_FROM_FRAMES)]
                   ) == [1.0, 0.0, 0.0]


# Library values of other types than the input's, as correct solutions return them: each
# judged as in the program's own process (the first passes, the second fails).
RESULT_TYPE_CASES = {
    "np.matrix": ("import numpy as np",
                  "def generate_test_case(i):\n    a = np.arange(4).reshape(2, 2) + i\n"
                  "    return a, a * 2\n",
                  "    np.testing.assert_array_equal(result, ans)\n    return 1",
                  "result = np.asmatrix(x * 2)\n", "result = np.asmatrix(x)\n"),
    "masked array": ("import numpy as np",
                     "def generate_test_case(i):\n    return np.array([1, -1, i]), "
                     "np.array([1, 0, i])\n",
                     "    np.testing.assert_array_equal(np.ma.filled(result, 0), ans)\n"
                     "    return 1",
                     "result = np.ma.masked_less(x, 0)\n", "result = np.ma.masked_less(x, 2)\n"),
    "torch Parameter": ("import torch",
                        "def generate_test_case(i):\n    return torch.ones(2) * i, "
                        "torch.ones(2) * i * 2\n",
                        "    return torch.equal(result.data, ans)",
                        "result = torch.nn.Parameter(x * 2)\n",
                        "result = torch.nn.Parameter(x)\n"),
    "sparse with duplicates": ("import numpy as np\nfrom scipy import sparse",
                               "def generate_test_case(i):\n    return i, 1\n",
                               "    return result.nnz == ans",
                               "result = sparse.csr_matrix(([1.0], [0], [0, 1, 1]), "
                               "shape=(2, 2))\n",
                               "result = sparse.csr_matrix(([1.0, 0.0], [0, 0], [0, 2, 2]), "
                               "shape=(2, 2))\n"),
}


@pytest.mark.parametrize("kind", sorted(RESULT_TYPE_CASES))
def test_ds1000_results_of_library_subtypes_are_judged_as_in_process(one, kind):
    pytest.importorskip("torch" if "torch" in kind else "scipy")
    setup, cases, check, good, wrong = RESULT_TYPE_CASES[kind]
    problem = ds1000(ds1000_context(setup, cases, check))
    assert rewards(one, [(problem, good), (problem, wrong)]) == [1.0, 0.0]


def test_ds1000_error_names_only_uncarried_data_the_test_looked_at(one):
    leftover = "class _Mine:\n    pass\nhelper = _Mine()\n"
    verdict, = one.verify([ds1000(PLAIN_DS1000)], [leftover + PLAIN_WRONG])
    assert verdict.reward == 0.0 and "helper" not in verdict.error
    verdict, = one.verify([ds1000(PLAIN_DS1000)], [ALWAYS_EQUAL_RESULT])
    assert "result (_Any)" in verdict.error


OBJECT_CASES = ("import types",
                "def generate_test_case(i):\n    return i, types.SimpleNamespace(twice=2 * i)\n",
                "    return result.twice == ans.twice")
MATPLOTLIB_CASES = ("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt",
                    "def generate_test_case(i):\n    plt.close('all')\n    return [1, i], None\n",
                    "    return len(plt.gca().get_lines()) == 1")


def test_ds1000_checks_whose_data_cannot_be_carried_run_in_the_programs_process(one):
    objects = ds1000(ds1000_context(*OBJECT_CASES))
    assert rewards(one, [(objects, "import types\nresult = types.SimpleNamespace(twice=2 * x)\n"),
                         (objects, "import types\nresult = types.SimpleNamespace(twice=x)\n")]
                   ) == [1.0, 0.0]
    pytest.importorskip("matplotlib")
    plot = ds1000(ds1000_context(*MATPLOTLIB_CASES))
    assert rewards(one, [(plot, "plt.plot(x)\nresult = None\n"), (plot, "result = None\n")]
                   ) == [1.0, 0.0]


def fd_writer(line: bytes) -> str:
    """A program that writes `line` three times into every fd of every other process that
    /proc lets it open."""
    return f"""
import os
for pid in os.listdir('/proc'):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    try:
        fds = os.listdir(f'/proc/{{pid}}/fd')
    except OSError:
        continue
    for fd in fds:
        try:
            with open(f'/proc/{{pid}}/fd/{{fd}}', 'wb') as handle:
                handle.write({line!r} * 3)
        except OSError:
            pass
"""


# For an ordinary user every process in the sandbox has the program's uid (bwrap's init, the
# server, the checker): a passing report and a job line into every fd it can open.
SAME_UID_FD_WRITER = (fd_writer(b'{"passed": true, "error": "", "id": "forged"}\n')
                      + "result = x\n")
AS_ORDINARY_USER = """
import json
from restrl.problems import Problem
from restrl.sandbox import Limits, Verifier
cases = json.loads(CASES)
with Verifier(workers=1, limits=Limits(timeout=5.0)) as v:
    verdicts = v.verify([Problem(**p) for p, _ in cases], [program for _, program in cases])
print(json.dumps([[v.reward, v.status, v.isolation] for v in verdicts]))
"""


def verdicts_as_ordinary_user(tmp_path: Path, cases: list[tuple[Problem, str]]) -> list[list]:
    """[reward, status, isolation] of each case, judged in order by one worker as uid 65534."""
    rows = [(dataclasses.asdict(problem), program) for problem, program in cases]
    out = run_as_ordinary_user(AS_ORDINARY_USER.replace("CASES", repr(json.dumps(rows))),
                               tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_ds1000_as_an_ordinary_user_hostile_programs_get_no_reward(tmp_path):
    """Not root: the worker's checker, like the server and bwrap's init, has the program's uid.
    The forgeries still fail, and the honest programs after each are judged right (a job line
    written into the server's channel would crash the next one)."""
    pytest.importorskip("numpy")
    setup, cases, check, good, wrong = LIBRARY_CASES["numpy"]
    numpy_context = ds1000_context(setup, cases, check)
    honest = [(PLAIN_DS1000, PLAIN_GOOD), (PLAIN_DS1000, PLAIN_WRONG)]
    cases = [(PLAIN_DS1000, SAME_UID_FD_WRITER), *honest,
             (PLAIN_DS1000, EXPECTED_FROM_FRAMES), (PLAIN_DS1000, TESTS_SWAPPED_THROUGH_FRAMES),
             (PLAIN_DS1000, ALWAYS_EQUAL_RESULT), *honest,
             (numpy_context, good), (numpy_context, wrong)]
    verdicts = verdicts_as_ordinary_user(tmp_path, [(ds1000(t), p) for t, p in cases])
    assert [r for r, _, _ in verdicts] == [0, 1, 0, 0, 0, 0, 1, 0, 1, 0], verdicts
    assert "crashed" not in {status for _, status, _ in verdicts}, verdicts
    assert {isolation for _, _, isolation in verdicts} == {"bwrap"}


def test_ds1000_tests_run_program_is_the_original_harness_honest_alike_forgeable_as_it_was():
    options = CheckOptions(ds1000_tests_run="program")
    with Verifier(workers=1, limits=Limits(timeout=2.0), options=options) as original:
        assert ds1000_honest_after(original) == [1.0, 0.0]
        assert rewards(original, [(ds1000(PLAIN_DS1000), EXPECTED_FROM_FRAMES)]) == [1.0]


def test_residual_risk_ds1000_in_the_programs_process_the_expected_result_is_readable(one):
    # What the README states: where DS1000's data is not carried, the check runs in the
    # program's process, as in the original, and a program can read the answer there.
    objects = ds1000(ds1000_context(*OBJECT_CASES))
    assert rewards(one, [(objects, EXPECTED_FROM_FRAMES)]) == [1.0]


# ----------------------------------------------------------------------------- least view

@needs_bwrap
def test_home_directories_datasets_artifacts_and_sockets_are_out_of_view(one):
    tag = uuid.uuid4().hex
    home_secret = Path.home() / f".restrl-test-credentials-{tag}"
    home_secret.write_text("aws_secret_access_key = x")
    sock_dir = Path("/var/tmp") / f"restrl-test-{tag}"
    sock_dir.mkdir()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_dir / "s.sock"))
    server.listen(1)
    repo = Path(__file__).resolve().parents[1]
    secrets = [str(home_secret), str(repo / "README.md"), str(repo / ".restrl"),
               str(repo / "restrl"), str(FIXTURES / "apps_seed.jsonl"),
               str(default_humaneval_path()), str(sock_dir), "/home", "/var", "/run", "/mnt"]
    program = (
        "import os, socket\n"
        f"visible = [p for p in {secrets!r} if os.path.exists(p)]\n"
        "try:\n    s = socket.socket(socket.AF_UNIX)\n"
        f"    s.connect({str(sock_dir / 's.sock')!r})\n    visible.append('socket')\n"
        "except OSError:\n    pass\n"
        "print(visible)\n")
    try:
        verdict = one.verify([stdio("[]\n")], [program])[0]
    finally:
        server.close()
        (sock_dir / "s.sock").unlink()
        sock_dir.rmdir()
        home_secret.unlink()
    assert verdict.reward == 1.0, verdict


@needs_bwrap
def test_tmp_and_dev_shm_are_fresh_for_every_job(one):
    writer = ("import os\nfor d in ('/tmp', '/dev/shm', os.path.dirname(os.getcwd())):\n"
              "    try:\n        open(os.path.join(d, 'left-behind'), 'w').write('x')\n"
              "    except OSError:\n        pass\nprint('absent')\n")
    reader = ("import os\nleft = [d for d in ('/tmp', '/dev/shm', os.path.dirname(os.getcwd()))\n"
              "        if os.path.exists(os.path.join(d, 'left-behind'))]\n"
              "print('present' if left else 'absent')\n")
    p = stdio("absent\n")
    assert rewards(one, [(p, writer), (p, reader)]) == [1.0, 1.0]


def test_verifier_environment_secrets_do_not_reach_programs(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "restrl-secret-4471")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "restrl-secret-4471")
    program = ("import os\nfound = 'restrl-secret-4471' in repr(dict(os.environ))\n"
               "for pid in os.listdir('/proc'):\n    try:\n"
               "        environ = open(f'/proc/{pid}/environ', 'rb').read()\n"
               "        found |= b'restrl-secret-4471' in environ\n"
               "    except OSError:\n        pass\nprint('leaked' if found else 'clean')\n")
    with Verifier(workers=1) as v:
        verdict = v.verify([stdio("clean\n")], [program])[0]
    assert verdict.reward == 1.0, verdict
    assert "restrl-secret" not in verdict.error


# ----------------------------------------------------------------------------- fair neighbours

REPLY_FD_WRITER = fd_writer(
    b'{"job": null, "status": "ok", "exit_code": 0, "signal": null, "seconds": 0, '
    b'"stdout": "", "stderr": "", "vault": {"status": "ok", "total": 1, "passed": 1, '
    b'"outcomes": "1", "reason": ""}, "messages": []}\n')


def test_writes_to_the_servers_fds_through_proc_do_not_shift_later_verdicts(one):
    assert rewards(one, [(he(), REPLY_FD_WRITER + WRONG_F)]) == [0.0]
    assert honest_after(one) == [1.0, 0.0]
    assert honest_after(one) == [1.0, 0.0]


def test_squatting_job_directories_does_not_break_later_jobs(one):
    squat = ("import os, itertools\nparent = os.path.dirname(os.getcwd())\n"
             "for d in (parent, '/tmp'):\n    for i in range(200):\n"
             "        for name in (f'job{i}', f'restrl-jobs-{i}', f'{i:024x}'):\n"
             "            try:\n                os.mkdir(os.path.join(d, name), 0)\n"
             "            except OSError:\n                pass\n" + WRONG_F)
    assert rewards(one, [(he(), squat)]) == [0.0]
    assert honest_after(one) == [1.0, 0.0]
    writes_its_dir = "open('f.txt', 'w').write('1')\nprint(open('f.txt').read())\n"
    assert rewards(one, [(stdio("1\n"), writes_its_dir)]) == [1.0]


CPU_THIEF = """
import os, time
for _ in range(60):
    try:
        if os.fork() == 0:
            os.setsid()
            while True:
                pass
    except OSError:
        break
time.sleep(30)
"""
HONEST_WORK = "def f(x):\n    sum(range(15_000_000))\n    return x + 1\n"


def test_setsid_cpu_thief_does_not_starve_a_neighbour_into_a_timeout():
    problems = [he("thief"), he("a"), he("b"), he("c"), he("d")]
    programs = [CPU_THIEF + WRONG_F] + [HONEST_WORK] * 4
    with Verifier(workers=2, limits=Limits(timeout=3.0)) as v:
        verdicts = v.verify(problems, programs)
    assert verdicts[0].reward == 0.0
    assert [(x.reward, x.status) for x in verdicts[1:]] == [(1.0, "passed")] * 4


def test_killing_everything_it_can_reach_costs_only_the_programs_own_verdict(one):
    killer = "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n"
    assert rewards(one, [(he(), killer + WRONG_F), (bcb(), killer + WRONG_TASK)]) == [0.0, 0.0]
    assert honest_after(one) == [1.0, 0.0]


def test_mixed_load_honest_verdicts_equal_their_verdicts_alone():
    humaneval = read_humaneval().problems[:12]
    honest = [(p, p.meta["reference"]) for p in humaneval] + \
             [(p, p.prompt + "    return None\n") for p in humaneval]
    hostile = [(he(), FRAME_TOKEN_FORGER + WRONG_F), (he(), REPLY_FD_WRITER + WRONG_F),
               (he(), HOOK_REENTRY + WRONG_F), (bcb(), HOOK_REENTRY + WRONG_TASK),
               (bcb(), FRAME_TOKEN_FORGER + WRONG_TASK), (he(), CTYPES_FLIP + WRONG_F),
               (he(), "import os\nos.kill(-1, 9)\n" + WRONG_F)]
    with Verifier(workers=2, limits=Limits(timeout=3.0)) as v:
        alone = [x.reward for x in v.verify([c[0] for c in honest], [c[1] for c in honest])]
    mixed: list[tuple[Problem, str, bool]] = []
    for i, case in enumerate(honest):
        mixed.append((*case, True))
        if i % 3 == 0:
            mixed.append((*hostile[(i // 3) % len(hostile)], False))
    with Verifier(workers=2, limits=Limits(timeout=3.0)) as v:
        verdicts = v.verify([m[0] for m in mixed], [m[1] for m in mixed])
    assert alone == [1.0] * 12 + [0.0] * 12
    assert [x.reward for x, m in zip(verdicts, mixed, strict=True) if m[2]] == alone
    assert [x.reward for x, m in zip(verdicts, mixed, strict=True) if not m[2]] == \
        [0.0] * sum(not m[2] for m in mixed)


JOBS_PARENT_BREAKER = ("import os\nparent = os.path.dirname(os.getcwd())\nos.chdir('/')\n"
                       "os.chmod(parent, 0)\nos.rename(parent, parent + '-gone')\n")
STOP_ZYGOTE = "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\n" + GOOD_F
# The worker's checker is the server's other child (the zygote, our parent, is one).
TO_THE_CHECKER = """
import os, resource, signal
def parent(pid):
    try:
        with open(f'/proc/{pid}/stat') as handle:
            return int(handle.read().rsplit(')', 1)[1].split()[1])
    except OSError:
        return None
server = parent(os.getppid())
for pid in [int(p) for p in os.listdir('/proc') if p.isdigit()]:
    if pid != os.getppid() and parent(pid) == server:
        ACTION
""" + GOOD_F
# Room for this job's small test, not for a later test that needs 64 MB.
SQUEEZE_CHECKER = TO_THE_CHECKER.replace("ACTION", (
    "size = int(open(f'/proc/{pid}/statm').read().split()[0]) * os.sysconf('SC_PAGE_SIZE')\n"
    "        resource.prlimit(pid, resource.RLIMIT_AS, (size + (16 << 20),) * 2)"))
BIG_CHECK_F = "def check(candidate):\n    room = bytearray(64 << 20)\n" + CHECK_F.split("\n", 1)[1]
# prlimit(2) lets a process change another's limits when both have the same uid.
PRLIMIT_EVERYONE = """
import os, resource
for pid in os.listdir('/proc'):
    if pid.isdigit() and int(pid) != os.getpid():
        for limit, value in ((resource.RLIMIT_NOFILE, 5), (resource.RLIMIT_NPROC, 0),
                             (resource.RLIMIT_AS, 1 << 20)):
            try:
                resource.prlimit(int(pid), limit, (value, value))
            except (OSError, ValueError):
                pass
        try:
            os.setpriority(os.PRIO_PROCESS, int(pid), 19)
        except OSError:
            pass
""" + GOOD_F
RANDOM_DRAW_TESTS = ("import random\nDRAW = random.random()\n"
                     "def check(candidate):\n    assert candidate(DRAW)\n")


def test_as_an_ordinary_user_no_program_changes_a_later_verdict(tmp_path):
    """Not root, every process in the sandbox has the programs' uid: a program can kill, stop
    or `prlimit` the worker's own processes (its checker too), own the jobs' parent directory
    and /tmp, leave files. None of it reaches the next job, and a test's unseeded random inputs
    are the same in every job."""
    writer = ("import os\nfor d in ('/tmp', '/dev/shm', os.path.dirname(os.getcwd())):\n"
              "    open(os.path.join(d, 'left-behind'), 'w').write('x')\nprint('absent')\n")
    reader = ("import os\nleft = [d for d in ('/tmp', '/dev/shm', os.path.dirname(os.getcwd()))\n"
              "        if os.path.exists(os.path.join(d, 'left-behind'))]\n"
              "print('present' if left else 'absent')\n")
    kill_zygote = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + GOOD_F
    kill_all = "import os, signal\nos.kill(-1, signal.SIGKILL)\n" + GOOD_F
    lock_tmp = "import os\nos.chdir('/')\nos.chmod('/tmp', 0)\nos.chmod('/dev/shm', 0)\n"
    honest = [((he(), GOOD_F), [1.0, "passed"]), ((he(), WRONG_F), [0.0, "failed"])]
    draw = he("r", RANDOM_DRAW_TESTS), "def f(x):\n    return x < 0.5\n"
    expected = [((stdio("absent\n"), writer), [1.0, "passed"]),
                ((stdio("absent\n"), reader), [1.0, "passed"])]
    for hostile in (JOBS_PARENT_BREAKER, lock_tmp):
        expected += [((stdio("\n"), hostile), None), *honest]
    signal_checker = [TO_THE_CHECKER.replace("ACTION", f"os.kill(pid, signal.{name})")
                      for name in ("SIGSTOP", "SIGALRM")]
    for hostile in (kill_zygote, kill_all, STOP_ZYGOTE, PRLIMIT_EVERYONE, *signal_checker):
        expected += [((he(), hostile), None), *honest]
    expected += [((he(), SQUEEZE_CHECKER), None), ((he("big", BIG_CHECK_F), GOOD_F),
                                                    [1.0, "passed"])]
    verdicts = verdicts_as_ordinary_user(tmp_path, [c for c, _ in expected] + [draw] * 3)
    judged, draws = verdicts[:len(expected)], verdicts[len(expected):]
    assert [v[:2] if want else None for v, (_, want) in zip(judged, expected, strict=True)] == \
        [want for _, want in expected], verdicts
    assert len({v[1] for v in draws}) == 1, verdicts  # the same draw in every job


def test_as_an_ordinary_user_the_worker_keeps_its_checker_between_jobs(tmp_path):
    # Test code counting the jobs its process has judged (a fresh checker per job would count
    # one every time): the checker is kept, as it is as root.
    counting = ("import sys\nsys.restrl_jobs = getattr(sys, 'restrl_jobs', 0) + 1\n"
                "def check(candidate):\n    assert candidate(0) == sys.restrl_jobs\n")
    cases = [(he("c", counting), f"def f(x):\n    return {n}\n") for n in (1, 2, 3)]
    assert [v[:2] for v in verdicts_as_ordinary_user(tmp_path, cases)] == [[1.0, "passed"]] * 3


# ----------------------------------------------------------------------------- no isolation

def test_without_bubblewrap_dataset_domains_are_refused_with_how_to_install(monkeypatch):
    isolation._bwrap_problem.cache_clear()
    monkeypatch.setattr(isolation, "_bwrap_problem", lambda: "bwrap is not installed")
    for domains in (["humaneval"], ["apps"], []):
        with pytest.raises(IsolationUnavailable, match="apt-get install bubblewrap"):
            Verifier(workers=1, domains=domains)
    with pytest.raises(IsolationUnavailable, match="isolation='rlimits'"):
        Verifier(workers=1, domains=["bigcodebench"])


def test_a_pool_started_early_still_refuses_dataset_domains_without_bubblewrap(monkeypatch):
    # start_pool starts bubblewrap workers before the probe answers: they must not be kept.
    monkeypatch.setattr(isolation, "_bwrap_problem", lambda: "bwrap is not installed")
    with pytest.raises(IsolationUnavailable, match="apt-get install bubblewrap"):
        start_pool(1, "auto", ["humaneval"]).result()
    toy = start_pool(1, "auto", ["toy"]).result()
    try:
        assert toy.isolation == "rlimits"
        assert [w.isolation for w in toy.workers] == ["rlimits"]
    finally:
        toy.close()


def test_without_bubblewrap_the_toy_domain_runs_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(isolation, "_bwrap_problem", lambda: "bwrap is not installed")
    toy = Problem(problem_id="t", domain="toy", prompt="", init_code="", tests=CHECK_F,
                  entry_point="f", io_mode="check")
    with caplog.at_level("WARNING", logger="restrl.sandbox"), \
            Verifier(workers=1, domains=["toy"]) as v:
        assert [x.reward for x in v.verify([toy, toy], [GOOD_F, WRONG_F])] == [1.0, 0.0]
        with pytest.raises(IsolationUnavailable):  # a dataset problem through the same pool
            v.verify([he()], [GOOD_F])
    assert "bubblewrap is not usable" in caplog.text
    assert os.environ.get("RESTRL_SANDBOX_TMP") is None


HOST_READER = """
import os
found = []
for pid in os.listdir('/proc'):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    for what in ('environ', 'mem'):  # opening another process's mem is enough to read it
        try:
            with open(f'/proc/{pid}/{what}', 'rb'):
                found.append(f'{what} of {pid}')
        except OSError:
            pass
print(found or 'clean')
"""
RLIMITS_AS_ORDINARY_USER = """
import json, logging
from restrl.problems import Problem
from restrl.sandbox import verify
logging.basicConfig()
p = Problem(problem_id="p", domain="apps", prompt="", init_code="", io_mode="stdio",
            tests=json.dumps({"inputs": ["\\n"], "outputs": ["clean\\n"]}))
print(verify([p], [PROGRAM], workers=1, isolation="rlimits")[0])
"""


def test_rlimits_as_an_ordinary_user_keep_the_verifiers_memory_and_environment_unreadable(
        tmp_path):
    """Asked for rlimits, an ordinary user's programs run as their uid: the process that
    verifies (whose environment holds the secrets) is non-dumpable, and says so."""
    script = RLIMITS_AS_ORDINARY_USER.replace("PROGRAM", repr(HOST_READER))
    secret = {"AWS_SECRET_ACCESS_KEY": "restrl-secret-4471"}
    out = run_as_ordinary_user(script, tmp_path, env=secret)
    assert "reward=1.0" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "non-dumpable" in out.stderr

