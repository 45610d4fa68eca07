"""The sandbox server as compiled code: Python compiles a script anew at every start (2000
lines of server.py: ~20 ms per worker), but runs a .pyc given as the script without that."""

from __future__ import annotations

import atexit
import importlib.util
import os
import py_compile
import shutil
import tempfile
from functools import cache
from pathlib import Path

SERVER_PATH = str(Path(__file__).with_name("server.py"))


def _pyc_is_fresh(pyc: str, source: str) -> bool:
    """Whether `pyc` is this interpreter's timestamp-checked compilation of `source` now."""
    try:
        with open(pyc, "rb") as handle:
            header = handle.read(16)
        st = os.stat(source)
    except OSError:
        return False
    return (header[:4] == importlib.util.MAGIC_NUMBER and header[4:8] == bytes(4)
            and int.from_bytes(header[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(header[12:16], "little") == st.st_size & 0xFFFFFFFF)


@cache
def compiled_server() -> str:
    """server.py compiled (Python runs a .pyc as a script): its import cache when fresh, else
    a private copy; the source itself if neither can be written."""
    cached = importlib.util.cache_from_source(SERVER_PATH)
    if _pyc_is_fresh(cached, SERVER_PATH):
        return cached
    for target in (cached, os.path.join(_private_dir(), "server.pyc")):
        try:
            return py_compile.compile(SERVER_PATH, cfile=target, doraise=True)
        except (OSError, py_compile.PyCompileError):
            continue
    return SERVER_PATH


@cache
def _private_dir() -> str:
    path = tempfile.mkdtemp(prefix="restrl-sandbox-code-")
    os.chmod(path, 0o755)  # rlimits jobs' uid runs the server from here
    atexit.register(shutil.rmtree, path, True)
    return path
