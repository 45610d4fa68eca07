"""Resource limits for one sandboxed execution: a small value object passed down, not globals.

Every time and memory limit a job runs under comes from `Limits`, per io_mode (the kind of
tests): the defaults are those of the original ReST-RL harness.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from pydantic import Field

from restrl.configs import config

# Modes whose tests import the data-science stack and run as one job (a suite, a test program).
LIBRARY_MODES = frozenset({"unittest", "ds1000"})
# Added to every job's wall clock (process start and teardown), as the original's
# `join(timeout + 1)`.
GRACE_SECONDS = 1.0


@config(frozen=True)
class Limits:
    """What one program may use while its tests run (wall-clock seconds; the CPU limit is the
    wall clock plus one second; memory as address space, RLIMIT_AS)."""

    # --- time
    timeout: float = Field(4.0, description=(
        "Seconds per test where tests run one at a time: each APPS input or call (4 s in the "
        "original harness) and a HumanEval/toy `check`."))
    job_timeout: float = Field(60.0, description=(
        "Seconds per job where the tests run as a whole: the BigCodeBench suite and the DS1000 "
        "test program (60 s each in the original, not per test). It also caps all of an APPS "
        "problem's tests together: past job_timeout + 1 s the remaining tests are not run and "
        "the reward is 0, as the original kills its APPS process and scores 0."))
    # --- memory
    memory_bytes: int = Field(2 << 30, description=(
        "Address space of an APPS, HumanEval or toy program (2 GiB; the original caps every "
        "domain at 16 GiB). BLAS/OpenMP pools are pinned to one thread so that `import numpy` "
        "fits under it."))
    library_memory_bytes: int = Field(16 << 30, description=(
        "Address space of a BigCodeBench or DS1000 program (16 GiB, the original's cap). "
        "Importing numpy, pandas, scipy, sklearn, matplotlib and torch together maps about "
        "3 GiB, so 2 GiB breaks correct programs; 16 GiB still stops a runaway allocation."))
    # --- other
    nproc: int = Field(64, description=(
        "Processes and threads (RLIMIT_NPROC, bound to a non-root uid or a namespace)."))
    output_bytes: int = Field(16 << 20, description=(
        "stdout beyond this is a flood: the run stops with status output_limit."))
    file_bytes: int = Field(64 << 20, description=(
        "Largest file the program may write in its private directory (RLIMIT_FSIZE)."))
    open_files: int = Field(256, description="Open file descriptors (RLIMIT_NOFILE).")

    def seconds(self, io_mode: str) -> float:
        """Seconds one job of `io_mode` may run: a test (stdio, call, check) or a whole suite."""
        return self.job_timeout if io_mode in LIBRARY_MODES else self.timeout

    def memory(self, io_mode: str) -> int:
        """Address space of one job of `io_mode`."""
        return self.library_memory_bytes if io_mode in LIBRARY_MODES else self.memory_bytes

    def for_job(self, io_mode: str) -> dict[str, float | int]:
        """The limits one job of `io_mode` runs under, as the sandbox server reads them."""
        wall = self.seconds(io_mode) + GRACE_SECONDS
        return {
            "wall_seconds": wall,
            "cpu_seconds": int(wall) + 1,
            "memory_bytes": self.memory(io_mode),
            "nproc": self.nproc,
            "output_bytes": self.output_bytes,
            "file_bytes": self.file_bytes,
            "open_files": self.open_files,
        }

    def with_timeout(self, timeout: float) -> Limits:
        return replace(self, timeout=timeout)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)
