"""The sandboxed verifier: exact rewards per domain, and hostile programs that must not win."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
from conftest import run_as_ordinary_user

from restrl.problems import Problem, read_humaneval, read_problems
from restrl.sandbox import Limits, Verifier, verify
from restrl.sandbox.isolation import bwrap_works
from restrl.sandbox.pool import start_pool, usable_cores

FIXTURES = Path(__file__).parent / "fixtures" / "problems"


@pytest.fixture(scope="module")
def verifier():
    with Verifier(workers=2, limits=Limits(timeout=2.0)) as v:
        yield v


def problem(pid: str, domain: str = "humaneval", **kw) -> Problem:
    fields = {"prompt": "", "init_code": "", "tests": "", "entry_point": "f", "io_mode": "check"}
    fields.update(kw)
    return Problem(problem_id=pid, domain=domain, **fields)


def stdio_problem(inputs: list[str], outputs: list[str]) -> Problem:
    import json

    return problem("stdio", "apps", io_mode="stdio", entry_point="",
                   tests=json.dumps({"inputs": inputs, "outputs": outputs}))


CHECK_F = "def check(candidate):\n    assert candidate(2) == 3\n    assert candidate(5) == 6\n"


def fixture_problems(name: str, domain: str) -> dict[str, Problem]:
    return {p.problem_id: p for p in read_problems(FIXTURES / name, domain).problems}


# ----------------------------------------------------------------------------- correctness


def test_humaneval_canonical_solutions_all_pass_and_broken_variants_all_fail():
    problems = read_humaneval().problems
    assert len(problems) == 164
    canonical = [p.meta["reference"] for p in problems]
    broken = [p.prompt + "    return None\n" for p in problems]
    verdicts = verify(problems + problems, canonical + broken, workers=2)
    good, bad = verdicts[:164], verdicts[164:]
    assert [p.problem_id for p, v in zip(problems, good, strict=True) if v.reward != 1.0] == []
    assert [p.problem_id for p, v in zip(problems, bad, strict=True) if v.reward != 0.0] == []
    assert all(v.strict and v.status == "passed" for v in good)


def test_apps_stdio_and_call_based_rewards_are_the_fraction_of_tests_passed(verifier):
    seed = fixture_problems("apps_seed.jsonl", "apps")
    original = fixture_problems("apps_original.jsonl", "apps")
    cases = [
        (seed["101"], "a, b = map(int, input().split())\nprint(a + b)\n", 1.0),
        (seed["101"], "a, b = map(int, input().split())\nprint(a - b if b < 0 else a + b)\n",
         2 / 3),
        (seed["101"], "print(42)\n", 0.0),
        (seed["102"], "def add(a, b):\n    return a + b\n", 1.0),
        (seed["102"], "def add(a, b):\n    return a * b if a == 3 else a + b\n", 2 / 3),
        (seed["102"], "def add(a, b):\n    raise RuntimeError('no')\n", 0.0),
        (original["2002"], original["2002"].meta["reference"], 1.0),
        (original["2001"], original["2001"].meta["reference"], 1.0),
    ]
    verdicts = verifier.verify([c[0] for c in cases], [c[1] for c in cases])
    assert [round(v.reward, 6) for v in verdicts] == [round(c[2], 6) for c in cases]
    assert verdicts[1].tests_passed == 2 and verdicts[1].tests_total == 3
    assert verdicts[1].status == "failed" and verdicts[5].status == "error"


def test_apps_program_with_exit_main_guard_or_stdin_buffer_passes(verifier):
    p = stdio_problem(["1 2\n", "3 4\n"], ["3\n", "7\n"])
    programs = [
        "a, b = map(int, input().split())\nprint(a + b)\nexit()\n",
        "import sys\ndef main():\n    a, b = map(int, sys.stdin.readline().split())\n"
        "    print(a + b)\nif __name__ == '__main__':\n    main()\n",
        "import sys\na, b = map(int, sys.stdin.buffer.read().split())\n"
        "sys.stdout.write(str(a + b) + '\\n')\nsys.exit(0)\n",
    ]
    assert [v.reward for v in verifier.verify([p] * 3, programs)] == [1.0, 1.0, 1.0]


def test_apps_output_is_compared_with_whitespace_and_float_tolerance(verifier):
    p = stdio_problem(["\n"], ["1 2\n0.3333333\n"])
    programs = ["print(' 1   2 ')\nprint(1/3)\n", "print('1 2')\nprint(0.34)\n"]
    assert [v.reward for v in verifier.verify([p, p], programs)] == [1.0, 0.0]


def test_call_based_result_with_forged_eq_does_not_pass(verifier):
    seed = fixture_problems("apps_seed.jsonl", "apps")
    program = ("class Always(int):\n    def __eq__(self, other):\n        return True\n"
               "def add(a, b):\n    return Always(0)\n")
    assert verifier.verify([seed["102"]], [program])[0].reward == 0.0


def test_bigcodebench_reward_counts_passing_test_methods(verifier):
    tasks = fixture_problems("bigcodebench.jsonl", "bigcodebench")
    t0, t1 = tasks["BigCodeBench/9000"], tasks["BigCodeBench/9001"]
    partial = "import math\ndef task_func(numbers):\n    return sum(numbers)\n"
    broken = "import math\ndef task_func(numbers):\n    return None\n"
    verdicts = verifier.verify([t0, t0, t0, t1],
                               [t0.meta["reference"], partial, broken, t1.meta["reference"]])
    assert [v.reward for v in verdicts] == [1.0, 0.5, 0.0, 1.0]
    assert (verdicts[1].tests_passed, verdicts[1].tests_total) == (2, 4)


def test_ds1000_test_execution_and_test_string_decide_the_reward(verifier):
    tasks = fixture_problems("ds1000.jsonl", "ds1000")
    t0, t1 = tasks["9000"], tasks["9001"]
    loop = "result = []\nfor w in words:\n    result.append(w.upper())\nresult = '-'.join(result)\n"
    verdicts = verifier.verify(
        [t0, t0, t1, t1],
        [t0.meta["reference"], "result = numbers\n", t1.meta["reference"], loop])
    assert [v.reward for v in verdicts] == [1.0, 0.0, 1.0, 0.0]


def test_verdicts_record_their_isolation(verifier):
    v = verifier.verify([problem("p", tests=CHECK_F)], ["def f(x):\n    return x + 1\n"])[0]
    assert v.status == "passed" and v.isolation == verifier.isolation
    if bwrap_works():
        assert verifier.isolation == "bwrap"


def test_rlimits_fallback_judges_programs_as_an_unprivileged_uid_or_refuses():
    from restrl.sandbox.isolation import IsolationUnavailable, runtime_readable_by_others

    p = problem("p", tests=CHECK_F)
    programs = ["import os\nassert os.getuid() != 0 and os.geteuid() != 0\n"
                "def f(x):\n    return x + 1\n", "def f(x):\n    return x\n"]
    if os.geteuid() == 0 and not runtime_readable_by_others():
        with pytest.raises(IsolationUnavailable, match="never runs programs as root"):
            verify([p, p], programs, workers=1, isolation="rlimits")
        return
    good, bad = verify([p, p], programs, workers=1, isolation="rlimits")
    assert (good.reward, bad.reward) == (1.0, 0.0)
    assert good.isolation == "rlimits"


# ----------------------------------------------------------------------------- hostile programs


def _processes_named(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


def test_each_worker_runs_its_jobs_on_one_core_and_workers_on_different_cores():
    one_core = "import os\nprint(len(os.sched_getaffinity(0)))\n"
    with Verifier(workers=2, limits=Limits(timeout=2.0)) as v:
        verdicts = v.verify([stdio_problem(["\n"], ["1\n"])] * 4, [one_core] * 4)
        v.verify([problem("p", tests=CHECK_F)] * 4, ["def f(x):\n    return x + 1\n"] * 4)
        cores = [worker.core for worker in v.pool.workers]
    assert [x.reward for x in verdicts] == [1.0] * 4
    assert len(cores) == min(2, len(usable_cores()))
    assert len(set(cores)) == len(cores)


def test_a_pool_started_early_judges_like_one_started_at_its_first_job():
    early = start_pool(2, "auto", ["humaneval"]).result()
    assert len(early.workers) == min(2, len(usable_cores()))
    with Verifier(limits=Limits(timeout=2.0), pool=early) as v:
        verdicts = v.verify([problem("p", tests=CHECK_F)] * 2,
                            ["def f(x):\n    return x + 1\n", "def f(x):\n    return x\n"])
    assert [x.reward for x in verdicts] == [1.0, 0.0]
    assert {x.isolation for x in verdicts} == {early.isolation}


def test_infinite_loop_times_out(verifier):
    v = verifier.verify([problem("p", tests=CHECK_F)], ["def f(x):\n    while True:\n"
                                                        "        pass\n"])[0]
    assert (v.reward, v.status) == (0.0, "failed") or v.status == "timeout"
    loop = verifier.verify([stdio_problem(["\n"], ["1\n"])], ["while True:\n    pass\n"])[0]
    assert (loop.reward, loop.status) == (0.0, "timeout")


def test_large_allocation_hits_the_memory_limit(verifier):
    v = verifier.verify([stdio_problem(["\n"], ["1\n"])], ["x = bytearray(8 << 30)\nprint(1)\n"])[0]
    assert (v.reward, v.status) == (0.0, "memory")


def test_stdout_flood_hits_the_output_limit_but_5mb_of_real_output_passes(verifier):
    flood = verifier.verify([stdio_problem(["\n"], ["1\n"])],
                            ["while True:\n    print('x' * 4096)\n"])[0]
    assert (flood.reward, flood.status) == (0.0, "output_limit")
    big = "y" * (5 << 20)
    ok = verifier.verify([stdio_problem(["\n"], [big + "\n"])],
                         [f"print('y' * {5 << 20})\n"])[0]
    assert (ok.reward, ok.status) == (1.0, "passed")


def test_fork_bomb_is_contained_and_leaves_nothing_running(verifier):
    bomb = ("import os, time\nfor _ in range(100000):\n    try:\n        os.fork()\n"
            "    except OSError:\n        time.sleep(0.01)\n")
    v = verifier.verify([stdio_problem(["\n"], ["1\n"])], [bomb])[0]
    assert v.reward == 0.0
    # Every forked copy is gone, and the sandbox still works.
    again = verifier.verify([stdio_problem(["\n"], ["1\n"])], ["print(1)\n"])[0]
    assert again.reward == 1.0


def test_child_processes_and_threads_do_not_outlive_the_job(verifier):
    marker = "restrl-leftover-marker-7791"
    program = (
        "import os, subprocess, threading, time\n"
        f"subprocess.Popen(['sleep', '300', '{marker}'], start_new_session=True)\n"
        "if os.fork() == 0:\n    os.setsid()\n"
        f"    os.execvp('sleep', ['sleep', '301', '{marker}'])\n"
        "threading.Thread(target=time.sleep, args=(300,)).start()\n"
        "print(1)\n"
    )
    v = verifier.verify([stdio_problem(["\n"], ["1\n"])], [program])[0]
    assert v.reward == 1.0  # the program itself is correct; its leftovers are killed
    assert _processes_named(marker) == []


def test_program_cannot_write_or_delete_host_files(verifier, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "created.txt"
    program = (
        "import os\n"
        f"for action in (lambda: os.remove({str(victim)!r}),\n"
        f"               lambda: open({str(target)!r}, 'w').write('x'),\n"
        f"               lambda: open({str(victim)!r}, 'w').write('gone')):\n"
        "    try:\n        action()\n    except OSError:\n        pass\n"
        "open('scratch.txt', 'w').write('private dir is writable')\n"
        "print(1)\n"
    )
    v = verifier.verify([stdio_problem(["\n"], ["1\n"])], [program])[0]
    if verifier.isolation != "bwrap":
        pytest.skip("filesystem isolation needs bubblewrap")
    assert v.reward == 1.0
    assert victim.read_text() == "keep me"
    assert not target.exists()


def test_program_cannot_reach_a_loopback_server(verifier):
    if verifier.isolation != "bwrap":
        pytest.skip("network isolation needs bubblewrap")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    received = []

    def accept() -> None:
        try:
            conn, _ = server.accept()
            received.append(conn.recv(100))
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    program = ("import socket\ntry:\n"
               f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')\n"
               "    print('connected')\nexcept OSError:\n    print('blocked')\n")
    v = verifier.verify([stdio_problem(["\n"], ["blocked\n"])], [program])[0]
    thread.join()
    server.close()
    assert v.reward == 1.0 and received == []


def test_killing_the_parent_or_everything_fails_the_program_not_the_host(verifier):
    p = problem("p", tests=CHECK_F)
    programs = [
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\ndef f(x):\n    return x + 1\n",
        "import os, signal\nos.kill(-1, signal.SIGKILL)\ndef f(x):\n    return x + 1\n",
    ]
    for program in programs:
        v = verifier.verify([p], [program])[0]
        assert v.reward == 0.0 or v.status == "passed"  # passes only if the kill was refused
    assert verifier.verify([p], ["def f(x):\n    return x + 1\n"])[0].reward == 1.0


@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)"])
def test_exiting_at_import_does_not_fake_a_pass(verifier, exit_call):
    tasks = fixture_problems("bigcodebench.jsonl", "bigcodebench")
    he = problem("p", tests=CHECK_F)
    verdicts = verifier.verify([he, tasks["BigCodeBench/9000"]],
                               [exit_call + "\ndef f(x):\n    return x + 1\n",
                                exit_call + "\ndef task_func(numbers):\n    return 0\n"])
    assert [v.reward for v in verdicts] == [0.0, 0.0]


def test_patching_unittest_is_detected_and_scores_zero(verifier):
    tasks = fixture_problems("bigcodebench.jsonl", "bigcodebench")
    program = ("import unittest\n"
               "unittest.TestCase.assertEqual = lambda *a, **k: None\n"
               "unittest.TestCase.assertRaises = lambda *a, **k: __import__('contextlib')"
               ".nullcontext()\n"
               "def task_func(numbers):\n    return None\n")
    v = verifier.verify([tasks["BigCodeBench/9000"]], [program])[0]
    assert (v.reward, v.status) == (0.0, "invalid")


def test_forged_reports_and_introspection_do_not_fake_a_pass(verifier):
    tasks = fixture_problems("bigcodebench.jsonl", "bigcodebench")
    he = problem("p", tests=CHECK_F)
    forge_pipe = ("import os\nfor fd in range(3, 64):\n    try:\n"
                  "        os.write(fd, b'{\"passed\": true}\\nOK ok 1111 \\n')\n"
                  "    except OSError:\n        pass\nos._exit(0)\n")
    walk_gc = ("import gc\nfor o in gc.get_objects():\n    pass\n"
               "def f(x):\n    return x\n")
    audit = "import sys\nsys.audit('restrl.test', 0, True)\nsys.audit('restrl.finish')\n"
    always_eq = ("class Yes:\n    def __eq__(self, other):\n        return True\n"
                 "def f(x):\n    return Yes()\n")
    builtins_patch = ("import builtins\nbuiltins.AssertionError = type('X', (BaseException,), {})\n"
                      "def f(x):\n    return x\n")
    verdicts = verifier.verify(
        [he, tasks["BigCodeBench/9000"], he, he, he, he],
        [forge_pipe, forge_pipe, walk_gc, audit + "def f(x):\n    return x\n", always_eq,
         builtins_patch])
    assert [v.reward for v in verdicts] == [0.0] * 6


def test_no_state_leaks_between_programs_and_hash_seed_is_fixed(verifier):
    p = stdio_problem(["\n"], ["absent\n"])
    writer = ("open('leak.txt', 'w').write('x')\nimport builtins\nbuiltins.leak = 1\n"
              "print('absent')\n")
    reader = ("import os, builtins\n"
              "print('present' if os.path.exists('leak.txt') or hasattr(builtins, 'leak')"
              " else 'absent')\n")
    verdicts = verifier.verify([p, p, p], [writer, reader, reader])
    assert [v.reward for v in verdicts] == [1.0, 1.0, 1.0], verdicts
    import subprocess
    import sys

    seeded = subprocess.run([sys.executable, "-c", "print(hash('restrl'))"], text=True,
                            capture_output=True, env={"PYTHONHASHSEED": "0"}, check=True).stdout
    h = stdio_problem(["\n"], [seeded])
    assert [v.reward for v in verifier.verify([h, h], ["print(hash('restrl'))\n"] * 2)] == [1, 1]


def test_verifier_works_from_a_script_in_tmp():
    """sys.path[0] is /tmp for a script there: the sandbox's own /tmp must stay writable."""
    import subprocess
    import sys
    import uuid

    script = Path("/tmp") / f"restrl_script_{uuid.uuid4().hex}.py"
    script.write_text(
        "from restrl.problems import Problem\nfrom restrl.sandbox import verify\n"
        "p = Problem(problem_id='p', domain='humaneval', prompt='', init_code='',\n"
        f"            tests={CHECK_F!r}, entry_point='f', io_mode='check')\n"
        "print(verify([p], ['def f(x):\\n    return x + 1\\n'], workers=1)[0].reward)\n")
    try:
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             timeout=120)
    finally:
        script.unlink()
    assert out.stdout.strip() == "1.0", out.stderr[-2000:]


NONROOT_SCRIPT = """
from restrl.problems import Problem
from restrl.sandbox import verify
p = Problem(problem_id='p', domain='humaneval', prompt='', init_code='',
            tests='def check(c):\\n    assert c(2) == 3\\n', entry_point='f', io_mode='check')
bomb = ('import os, time\\nfor _ in range(100000):\\n    try:\\n        os.fork()\\n'
        '    except OSError:\\n        time.sleep(0.01)\\ndef f(x):\\n    return x + 1\\n')
verdicts = verify([p, p, p], ['def f(x):\\n    return x + 1\\n', 'def f(x):\\n    return x\\n',
                              bomb], workers=1)
print([(v.reward, v.status, v.isolation) for v in verdicts])
"""


def test_sandbox_works_for_an_ordinary_user(tmp_path):
    """As a non-root user bubblewrap runs in a user namespace; the fork bomb is still bounded."""
    out = run_as_ordinary_user(NONROOT_SCRIPT, tmp_path)
    assert out.stdout.strip() == ("[(1.0, 'passed', 'bwrap'), (0.0, 'failed', 'bwrap'), "
                                  "(0.0, 'timeout', 'bwrap')]"), out.stderr[-2000:]
