"""Host side of the sandbox: start fork servers (under bubblewrap when it works) and run jobs.

Isolation, strongest first:
- `bwrap`: bubblewrap with new PID, network, IPC and UTS namespaces and a least view of the
  filesystem: the system directories (`/usr`, `/etc`, ...) and the Python runtime read-only,
  a private `/tmp` and `/dev/shm` (wiped after every job), nothing else: no home directories,
  no checkout, no dataset or artifact files. As root, programs run as a non-root uid per worker
  (so RLIMIT_NPROC binds and the server's fds and memory are another uid's); as an ordinary
  user, in a user namespace, with the server non-dumpable (its fds and memory unreachable).
  When a job ends, every other process in the namespace is killed.
- `rlimits`: only when asked for (`isolation="rlimits"`), or for the toy domain where
  bubblewrap is missing: rlimits, a private job directory, an unprivileged uid (never root),
  a scrubbed environment, every process of that uid killed afterwards. No network or
  filesystem isolation.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import importlib.util
import itertools
import json
import logging
import os
import queue
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

from restrl.sandbox.compiled import compiled_server
from restrl.sandbox.isolation import (
    FALLBACK_DOMAINS,
    SANDBOX_SERVER_PATH,
    bwrap_args,
    hide_this_process_from_own_uid,
    program_env,
    resolve_isolation,
    runtime_readable_by_others,
    site_config,
    view_args,
)

if TYPE_CHECKING:  # the pool imports no config: `restrl verify` starts it before those load
    from restrl.sandbox.limits import Limits

log = logging.getLogger("restrl.sandbox")

# Each worker's jobs run as their own uid when we are root, so RLIMIT_NPROC binds; the test
# code of HumanEval/toy runs as another (CHECKER_UID_OFFSET higher), which the program cannot
# signal or trace.
SANDBOX_UID_BASE = 61000
CHECKER_UID_OFFSET = 1000
# Imported once per server and inherited by every forked job.
DEFAULT_PRELOAD = ("unittest", "unittest.mock", "json", "re", "math", "collections", "itertools")
# Modules each worker imports once, so that a forked job finds them loaded, per domain: the
# APPS import header, and the libraries the DS1000 / BigCodeBench tests import.
PRELOAD_BY_DOMAIN: dict[str, tuple[str, ...]] = {
    "apps": ("fractions", "functools", "heapq", "random", "time", "typing", "numpy"),
    "bigcodebench": ("numpy", "pandas"),
    "ds1000": ("numpy", "pandas"),
}
# Domains judged by the checker process only (`check(candidate)`): their workers skip
# unittest.mock (and the asyncio, threading and logging it loads, whose at-fork handlers
# make every forked job touch, and so copy, a few hundred more pages).
CHECK_ONLY_DOMAINS = frozenset({"humaneval", "toy"})
# What HumanEval programs import (typing: one in eight). Not `random`: its at-fork reseeding
# costs every job, and the tests that use it run in the checker, which imports it itself. Not
# `unittest` (no check job uses it): 2 MB less for every job's fork to map and copy.
CHECK_PRELOAD = (*(m for m in DEFAULT_PRELOAD if not m.startswith("unittest")), "typing", "string",
                 "copy")
# Domains whose every job gets the data-library memory limit: only their workers' fork servers
# import what a DS1000 test imports (torch: ~130 MB more in each job process's measure), so in
# a pool of other domains a job's memory is measured as it is whatever ran before it.
LIBRARY_DOMAINS = frozenset({"ds1000", "bigcodebench"})


@dataclass
class RunResult:
    """What one job produced, as the sandbox server reported it."""

    status: str  # ok | timeout | memory | output_limit | crashed
    exit_code: int | None
    signal: int | None
    seconds: float
    stdout: bytes
    stderr: str
    vault: dict | None  # sealed outcomes for check/unittest/ds1000 jobs
    messages: list[dict] = field(default_factory=list)


def _count_own_processes() -> int:
    uid = os.getuid()
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                pass
    return count


def preload_for(domains: Sequence[str]) -> tuple[str, ...]:
    """Modules each worker imports before forking jobs (no domains given: those of all)."""
    if domains and set(domains) <= CHECK_ONLY_DOMAINS:
        return CHECK_PRELOAD
    wanted = domains or tuple(PRELOAD_BY_DOMAIN)
    extra = dict.fromkeys(m for d in wanted for m in PRELOAD_BY_DOMAIN.get(d, ())
                          if m not in DEFAULT_PRELOAD)
    return DEFAULT_PRELOAD + tuple(m for m in extra if importlib.util.find_spec(m) is not None)


def usable_cores() -> list[int]:
    """The cores this process may run on (a cpuset or `taskset` narrows them)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


_workers_made = itertools.count()  # across pools: two one-worker pools get different cores


def next_worker_core() -> int | None:
    """The core the next worker runs on (its server, checker and jobs alike), or None.

    A job is a chain of processes that hand over to each other (the checker calls the
    program, the program answers): on one core each hand-over is a plain context switch, on
    two it wakes an idle core, which costs more than the call (3.9 against 1.2 ms per
    HumanEval check on these machines). It also keeps one worker's jobs off another's core.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = usable_cores()
    return cores[next(_workers_made) % len(cores)]


@cache
def _spawner() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(1, thread_name_prefix="restrl-sandbox-spawner")


class SandboxWorker:
    """One fork server; runs one job at a time. Restarts itself after a crash."""

    def __init__(self, index: int, isolation: str, preload: tuple[str, ...] = DEFAULT_PRELOAD,
                 warm_libraries: bool = False):
        self.index = index
        self.isolation = isolation
        self.preload = preload
        self.warm_libraries = warm_libraries
        self.proc: subprocess.Popen | None = None
        self.as_root = os.geteuid() == 0
        # As root, jobs run as a per-worker uid so that RLIMIT_NPROC binds; without bwrap that
        # uid must be able to read the Python runtime (else only toy jobs run, as root).
        drop = self.as_root and (isolation == "bwrap" or runtime_readable_by_others())
        self.uid = SANDBOX_UID_BASE + index if drop else None
        self.checker_uid = self.uid + CHECKER_UID_OFFSET if self.uid is not None else None
        self._tmp: str | None = None
        self._buffer = b""
        self.core = next_worker_core()

    def start(self) -> None:
        # The channel travels on fds >= 3, never on stdio: bwrap's init (pid 1 in the sandbox)
        # keeps its stdio open and, for an ordinary user, has the programs' uid, so a program
        # could open /proc/1/fd/0 and /proc/1/fd/1; it closes every other fd.
        jobs_r, jobs_w = _pipe_above_stdio()
        replies_r, replies_w = _pipe_above_stdio()
        try:
            self.proc = self._spawn([jobs_r, replies_w])
        except BaseException:
            os.close(jobs_w)
            os.close(replies_r)
            raise
        finally:
            os.close(jobs_r)
            os.close(replies_w)
        self._jobs = os.fdopen(jobs_w, "wb")
        self._replies = replies_r
        self._buffer = b""
        hello = self._read_line(time.monotonic() + 60)
        if hello is None or not json.loads(hello).get("ready"):
            self.stop()
            raise RuntimeError(f"sandbox worker {self.index} ({self.isolation}) did not start")

    def _spawn(self, channel: list[int]) -> subprocess.Popen:
        """Start this worker's server, `channel` (jobs in, replies out) its fds >= 3."""
        config: dict = {"channel": channel, "uid": self.uid, "checker_uid": self.checker_uid,
                        "preload": list(self.preload), "in_namespace": self.isolation == "bwrap",
                        "cpu": self.core, "warm_libraries": self.warm_libraries,
                        **site_config()}
        env = program_env()
        # -S: the server sets up what `site` would itself (see site_config), skipping its
        # .pth hooks (an editable install's finder alone costs 13 ms per start).
        flags = ["-S", "-s", "-B"]
        if self.isolation == "bwrap":
            _, config["keep"] = view_args()
            cmd = bwrap_args(self.as_root) + [sys.executable, *flags, SANDBOX_SERVER_PATH,
                                               json.dumps(config)]
        else:
            self._tmp = tempfile.mkdtemp(prefix="restrl-sandbox-")
            os.chmod(self._tmp, 0o711)  # the jobs' uid may enter, not list or create
            config["tmp"] = self._tmp
            cmd = [sys.executable, *flags, compiled_server(), json.dumps(config)]
        # bwrap --die-with-parent follows the *thread* that started it (PR_SET_PDEATHSIG), so
        # servers are started from one long-lived thread, not from short-lived task threads.
        return _spawner().submit(
            subprocess.Popen, cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, pass_fds=channel, env=env, start_new_session=True,
            cwd="/",
        ).result()

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, 9)
            except OSError:
                pass
            self.proc.wait()
            with contextlib.suppress(OSError):
                self._jobs.close()
            os.close(self._replies)
            self.proc = None
            if self.uid is not None and self.isolation == "rlimits":
                _kill_uid(self.uid)
                _kill_uid(self.checker_uid)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def run(self, job: dict) -> RunResult:
        if self.proc is None or self.proc.poll() is not None:
            self.stop()
            self.start()
        assert self.proc is not None
        deadline = time.monotonic() + float(job["limits"]["wall_seconds"]) + 15.0
        job = {**job, "id": os.urandom(8).hex()}  # the reply must name it: no stale replies
        try:
            self._jobs.write((json.dumps(job) + "\n").encode())
            self._jobs.flush()
            line = self._read_line(deadline)
        except (BrokenPipeError, OSError):
            line = None
        reply = None
        if line is not None:
            try:
                reply = json.loads(line)
            except ValueError:
                reply = None
        if not isinstance(reply, dict) or reply.get("job") != job.get("id"):
            # The server died (the program killed it), hung, or its channel is out of step:
            # never trust a later reply of this server.
            self.stop()
            return RunResult("crashed", None, None, 0.0, b"", "sandbox server died", None)
        if reply.get("restart"):  # the server has gone; the next job starts a fresh one
            self.stop()
        return RunResult(
            status=reply["status"],
            exit_code=reply.get("exit_code"),
            signal=reply.get("signal"),
            seconds=float(reply.get("seconds", 0.0)),
            stdout=base64.b64decode(reply.get("stdout", "")),
            stderr=reply.get("stderr", "") or reply.get("error", ""),
            vault=reply.get("vault"),
            messages=reply.get("messages", []),
        )

    def _read_line(self, deadline: float) -> bytes | None:
        assert self.proc is not None
        fd = self._replies
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 65536)  # larger buffers are mmaps of their own
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


def _pipe_above_stdio() -> tuple[int, int]:
    """A pipe whose ends are not fds 0-2 (a host started with stdio closed gets those)."""
    ends = []
    for fd in os.pipe():
        if fd < 3:
            fd, old = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3), fd
            os.close(old)
        ends.append(fd)
    return ends[0], ends[1]


def _kill_uid(uid: int | None) -> None:
    """Every process of `uid` (a worker's own): nothing a rlimits job started outlives it."""
    if uid is None:
        return
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status", "rb") as handle:
                    real = next(line for line in handle if line.startswith(b"Uid:")).split()[1]
                if int(real) == uid:
                    os.kill(int(entry), 9)
            except (OSError, StopIteration, ValueError):
                pass


class SandboxPool:
    """A fixed set of fork servers shared by threads; never more workers than cores.

    `domains` are those whose programs the pool will run: without bubblewrap, `auto` refuses
    all but the toy domain (see `resolve_isolation`).
    """

    def __init__(self, workers: int | None = None, isolation: str = "auto",
                 preload: tuple[str, ...] | None = None, domains: Sequence[str] = (),
                 resolved: str | None = None):
        cores = len(usable_cores())
        self.size = max(1, min(workers or cores, cores))
        # `resolved`: what `resolve_isolation` will answer, known to the caller (`start_pool`)
        self.isolation = resolved or resolve_isolation(isolation, domains)
        if self.isolation == "rlimits" and os.geteuid() != 0:
            hide_this_process_from_own_uid()
        # Only the toy domain runs in the unrequested fallback.
        self.domains = (None if isolation == "rlimits" or self.isolation == "bwrap"
                        else FALLBACK_DOMAINS)
        self.preload = preload_for(domains) if preload is None else preload
        self.warm_libraries = bool(domains) and set(domains) <= LIBRARY_DOMAINS
        self._idle: queue.Queue[SandboxWorker] = queue.Queue()
        self._all: list[SandboxWorker] = []
        self._lock = threading.Lock()
        self._nproc_floor = 0 if os.geteuid() == 0 else _count_own_processes()

    @property
    def workers(self) -> list[SandboxWorker]:
        """The workers started so far."""
        return list(self._all)

    def start(self) -> SandboxPool:
        """Start every worker now, together, instead of each at its first job."""
        _warn_not_started(self._start_all())
        return self

    def _start_all(self) -> list[str]:
        with self._lock:
            new = [SandboxWorker(len(self._all) + i, self.isolation, self.preload,
                                  self.warm_libraries)
                   for i in range(self.size - len(self._all))]
            self._all += new
        with ThreadPoolExecutor(max(1, len(new))) as executor:
            failed = [e for e in executor.map(_start_or_error, new) if e is not None]
        for worker in new:
            self.release(worker)
        return failed

    def check_domain(self, domain: str) -> None:
        """Refuse a domain the pool's isolation is not good enough for."""
        if self.domains is not None and domain not in self.domains:
            resolve_isolation("auto", [domain])  # raises with the explanation

    def nproc_limit(self, limits: Limits) -> int:
        """RLIMIT_NPROC counts every process of the uid: non-root users start from their own."""
        return limits.nproc + self._nproc_floor

    def acquire(self) -> SandboxWorker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._all) < self.size:
                worker = SandboxWorker(len(self._all), self.isolation, self.preload,
                                  self.warm_libraries)
                self._all.append(worker)
                return worker
        return self._idle.get()

    def release(self, worker: SandboxWorker) -> None:
        self._idle.put(worker)

    def run(self, job: dict) -> RunResult:
        worker = self.acquire()
        try:
            return worker.run(job)
        finally:
            self.release(worker)

    def close(self) -> None:
        for worker in self._all:
            worker.stop()
        self._all.clear()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start_or_error(worker: SandboxWorker) -> str | None:
    try:
        worker.start()
    except Exception as exc:  # noqa: BLE001 - reported by the caller
        return str(exc)
    return None


def _warn_not_started(errors: list[str]) -> None:
    for error in errors:  # the worker starts again at its first job, which reports the error
        log.warning("%s; trying again at its first job", error)


def _started_pool(workers: int | None, isolation: str, domains: Sequence[str]) -> SandboxPool:
    """A started pool. Where bubblewrap is installed and may be used, its workers start under it
    while the probe of whether it works runs (~30 ms), and are kept if it does."""
    if isolation not in ("auto", "bwrap") or shutil.which("bwrap") is None:
        return SandboxPool(workers, isolation, None, domains).start()
    hopeful = SandboxPool(workers, isolation, None, domains, resolved="bwrap")
    with ThreadPoolExecutor(1) as prober:
        answer = prober.submit(resolve_isolation, isolation, domains)
        failed = hopeful._start_all()
        try:
            works = answer.result() == "bwrap"
        except BaseException:
            hopeful.close()
            raise
    if not works:  # the toy domain without working bubblewrap: rlimits, as resolved
        hopeful.close()
        return SandboxPool(workers, isolation, None, domains).start()
    _warn_not_started(failed)
    return hopeful


def start_pool(workers: int | None = None, isolation: str = "auto",
               domains: Sequence[str] = ()) -> Future[SandboxPool]:
    """A pool for `domains`, its workers starting in a background thread from now on.

    Its servers start (bubblewrap, an interpreter, the preloaded modules: ~70 ms) while the
    caller goes on; the caller passes `.result()` to `Verifier(pool=...)`, which closes it.
    """
    future: Future[SandboxPool] = Future()

    def start() -> None:
        try:
            future.set_result(_started_pool(workers, isolation, domains))
        except BaseException as exc:  # noqa: BLE001 - the caller's .result() raises it
            future.set_exception(exc)

    threading.Thread(target=start, name="restrl-sandbox-start", daemon=True).start()
    return future
