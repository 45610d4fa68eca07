"""Host side of the sandbox: start fork servers (under bubblewrap when it works) and run jobs.

Isolation, strongest first:
- `bwrap`: bubblewrap with new PID, network, IPC and UTS namespaces, a read-only view of `/`, a
  private tmpfs `/tmp`, and (as root) a non-root uid per worker so that RLIMIT_NPROC binds.
  When the job ends, every other process in the namespace is killed.
- `rlimits`: where bubblewrap is missing or cannot create namespaces: rlimits, a private
  temporary directory, the process group killed afterwards (as root, also every process of the
  worker's uid). No network or filesystem isolation; a warning is logged once.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import queue
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from restrl.sandbox.limits import Limits

log = logging.getLogger("restrl.sandbox")

SERVER_PATH = str(Path(__file__).with_name("server.py"))
# Each worker's jobs run as their own uid when we are root, so RLIMIT_NPROC binds.
SANDBOX_UID_BASE = 61000
# Imported once per server and inherited by every forked job.
DEFAULT_PRELOAD = ("unittest", "unittest.mock", "json", "re", "math", "collections", "itertools")


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


def program_env() -> dict[str, str]:
    """The environment programs see: fixed hash seed, single-threaded BLAS, no user config."""
    env = {
        "PATH": os.path.dirname(sys.executable) + ":/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "MPLBACKEND": "Agg",
        "HOME": "/tmp",
    }
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "TOKENIZERS_PARALLELISM"):
        env[var] = "1" if var != "TOKENIZERS_PARALLELISM" else "false"
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # machine workarounds stay in place
        if var in os.environ:
            env[var] = os.environ[var]
    return env


def _runtime_paths() -> list[str]:
    """Directories a job's interpreter must read: Python, the venv, sys.path, restrl itself."""
    paths = {sys.base_prefix, sys.prefix, str(Path(SERVER_PATH).parents[2])}
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    return sorted({os.path.realpath(p) for p in paths})


def _closed_ancestor(path: str) -> str | None:
    """The highest ancestor of `path` that other users cannot traverse (e.g. /root, mode 700)."""
    parts = Path(path).parts
    for i in range(2, len(parts) + 1):
        ancestor = str(Path(*parts[:i]))
        try:
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                return ancestor
        except OSError:
            return None
    return None


def _masks(as_root: bool) -> dict[str, list[str]]:
    """Directories replaced by an empty tmpfs, each with the runtime paths bound back inside.

    /tmp is always private to the sandbox; a runtime under it (a checkout in /tmp) is bound
    back read-only. As root, jobs run as another uid, which cannot read a Python installed under
    a closed directory such as /root (mode 700): that directory is masked the same way, which
    also hides the rest of it.
    """
    masks: dict[str, list[str]] = {"/tmp": []}
    for path in _runtime_paths():
        if path == "/tmp":  # a script run from /tmp: the sandbox's /tmp must stay private
            continue
        if path.startswith("/tmp/"):
            masks["/tmp"].append(path)
        elif as_root and (ancestor := _closed_ancestor(path)) is not None:
            masks.setdefault(ancestor, []).append(path)
    return masks


def _mask_args(ancestor: str, paths: list[str]) -> list[str]:
    size = ["--size", str(1 << 30)] if ancestor == "/tmp" else []
    args = ["--perms", "1777" if ancestor == "/tmp" else "0755", *size, "--tmpfs", ancestor]
    # Binding a directory brings its subdirectories: keep only the outermost paths.
    paths = [p for p in paths if not any(p != q and p.startswith(q + "/") for q in paths)]
    made: set[str] = set()
    for path in sorted(paths):
        # bwrap would create the mount point's parents with mode 0700: make them 0755.
        for parent in reversed(Path(path).parents):
            if len(parent.parts) > len(Path(ancestor).parts) and str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", path, path]
    return args


def runtime_readable_by_others() -> bool:
    return all(_closed_ancestor(p) is None for p in _runtime_paths())


def _bwrap_args(as_root: bool) -> list[str]:
    args = [
        "bwrap",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session",
        "--chdir", "/tmp",
    ]
    for ancestor, paths in sorted(_masks(as_root).items()):
        args += _mask_args(ancestor, paths)
    if not as_root:
        args.append("--unshare-user")
    return args + ["--"]


@cache
def bwrap_works() -> bool:
    """True when bubblewrap can create the namespaces we use, for the current user."""
    if shutil.which("bwrap") is None:
        return False
    cmd = _bwrap_args(os.geteuid() == 0) + [sys.executable, "-c", "print('ok')"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "ok"


def resolve_isolation(requested: str = "auto") -> str:
    """`auto` picks bwrap when it works, else rlimits with a logged warning."""
    if requested not in ("auto", "bwrap", "rlimits"):
        raise ValueError(f"unknown isolation {requested!r}: expected auto, bwrap or rlimits")
    if requested == "rlimits":
        return "rlimits"
    if bwrap_works():
        return "bwrap"
    if requested == "bwrap":
        raise RuntimeError("bubblewrap is not usable here (install the `bubblewrap` package, "
                           "and allow unprivileged user namespaces for non-root users)")
    log.warning("bubblewrap is not usable here: falling back to rlimits + a temporary "
                "directory (no network or filesystem isolation)")
    return "rlimits"


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


@cache
def _spawner() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(1, thread_name_prefix="restrl-sandbox-spawner")


class SandboxWorker:
    """One fork server; runs one job at a time. Restarts itself after a crash."""

    def __init__(self, index: int, isolation: str, preload: tuple[str, ...] = DEFAULT_PRELOAD):
        self.index = index
        self.isolation = isolation
        self.preload = preload
        self.proc: subprocess.Popen | None = None
        self.as_root = os.geteuid() == 0
        # As root, jobs run as a per-worker uid so that RLIMIT_NPROC binds; without bwrap that
        # uid must be able to read the Python runtime.
        drop = self.as_root and (isolation == "bwrap" or runtime_readable_by_others())
        self.uid = SANDBOX_UID_BASE + index if drop else None
        if self.as_root and not drop and index == 0:
            log.warning("the Python runtime is not readable by other users: sandboxed jobs run "
                        "as root without bubblewrap, so the process limit does not bind")
        self._tmp: str | None = None
        self._buffer = b""

    def start(self) -> None:
        config = {"uid": self.uid, "preload": list(self.preload),
                  "in_namespace": self.isolation == "bwrap"}
        env = program_env()
        cmd = [sys.executable, "-s", "-B", SERVER_PATH, json.dumps(config)]
        if self.isolation == "bwrap":
            cmd = _bwrap_args(self.as_root) + cmd
        else:
            self._tmp = tempfile.mkdtemp(prefix="restrl-sandbox-")
            if self.uid is not None:
                os.chmod(self._tmp, 0o711)
            env["RESTRL_SANDBOX_TMP"] = self._tmp
        # bwrap --die-with-parent follows the *thread* that started it (PR_SET_PDEATHSIG), so
        # servers are started from one long-lived thread, not from short-lived task threads.
        self.proc = _spawner().submit(
            subprocess.Popen, cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, start_new_session=True,
        ).result()
        self._buffer = b""
        hello = self._read_line(time.monotonic() + 60)
        if hello is None or not json.loads(hello).get("ready"):
            self.stop()
            raise RuntimeError(f"sandbox worker {self.index} ({self.isolation}) did not start")

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, 9)
            except OSError:
                pass
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()
            self.proc = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def run(self, job: dict) -> RunResult:
        if self.proc is None or self.proc.poll() is not None:
            self.stop()
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        deadline = time.monotonic() + float(job["limits"]["wall_seconds"]) + 15.0
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
            line = self._read_line(deadline)
        except (BrokenPipeError, OSError):
            line = None
        if line is None:  # the server died (the program killed it) or hung
            self.stop()
            return RunResult("crashed", None, None, 0.0, b"", "sandbox server died", None)
        reply = json.loads(line)
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
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


class SandboxPool:
    """A fixed set of fork servers shared by threads; never more workers than cores."""

    def __init__(self, workers: int | None = None, isolation: str = "auto",
                 preload: tuple[str, ...] = DEFAULT_PRELOAD):
        cores = os.cpu_count() or 1
        self.size = max(1, min(workers or cores, cores))
        self.isolation = resolve_isolation(isolation)
        self.preload = preload
        self._idle: queue.Queue[SandboxWorker] = queue.Queue()
        self._all: list[SandboxWorker] = []
        self._lock = threading.Lock()
        self._nproc_floor = 0 if os.geteuid() == 0 else _count_own_processes()

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
                worker = SandboxWorker(len(self._all), self.isolation, self.preload)
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
