"""Resource limits for one sandboxed execution: a small value object passed down, not globals.

Every time and memory limit a job runs under comes from `Limits`, per io_mode (the kind of
tests): the defaults are those of the original ReST-RL harness.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

# Modes whose tests import the data-science stack and run as one job (a suite, a test program).
LIBRARY_MODES = frozenset({"unittest", "ds1000"})
# Added to every job's wall clock (process start and teardown), as the original's
# `join(timeout + 1)`.
GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class Limits:
    """What one program may use while its tests run.

    Time, in wall-clock seconds (the CPU limit is the wall clock plus one second):
        timeout: per test, where tests run one at a time: each APPS input or call (4 s in the
            original harness) and a HumanEval/toy `check`.
        job_timeout: per job where the tests run as a whole: the BigCodeBench suite and the
            DS1000 test program (60 s each in the original, not per test). It also caps all of an
            APPS problem's tests together: past `job_timeout + GRACE_SECONDS` the remaining tests
            are not run and the reward is 0, as the original kills its APPS process and scores 0.
    Memory, as address space (RLIMIT_AS):
        memory_bytes: APPS, HumanEval, toy (2 GiB; the original caps every domain at 16 GiB).
            BLAS/OpenMP pools are pinned to one thread so that `import numpy` fits under it.
        library_memory_bytes: BigCodeBench and DS1000 (16 GiB, the original's cap). Importing
            numpy, pandas, scipy, sklearn, matplotlib and torch together maps about 3 GiB, so
            2 GiB breaks correct programs; 16 GiB still stops a runaway allocation.
    Other:
        nproc: process/thread limit (RLIMIT_NPROC, bound to a non-root uid or a namespace).
        output_bytes: stdout beyond this is a flood: the run stops with `output_limit`.
        file_bytes: largest file the program may write in its private directory.
        open_files: RLIMIT_NOFILE.
    """

    timeout: float = 4.0
    job_timeout: float = 60.0
    memory_bytes: int = 2 << 30
    library_memory_bytes: int = 16 << 30
    nproc: int = 64
    output_bytes: int = 16 << 20
    file_bytes: int = 64 << 20
    open_files: int = 256

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
