"""Resource limits for one sandboxed execution: a small value object passed down, not globals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Limits:
    """What one program may use while its tests run.

    Attributes:
        timeout: wall-clock seconds per test (APPS: per input; unittest: per test method). The
            job as a whole gets `timeout * tests + 1` seconds of wall clock and of CPU.
        memory_bytes: address-space limit (RLIMIT_AS). BLAS/OpenMP pools are pinned to one
            thread so that `import numpy` fits under it.
        nproc: process/thread limit (RLIMIT_NPROC, bound to a non-root uid or a namespace).
        output_bytes: stdout beyond this is a flood: the run stops with `output_limit`.
        file_bytes: largest file the program may write in its private directory.
        open_files: RLIMIT_NOFILE.
    """

    timeout: float = 4.0
    memory_bytes: int = 2 << 30
    nproc: int = 64
    output_bytes: int = 16 << 20
    file_bytes: int = 64 << 20
    open_files: int = 256

    def for_job(self, tests: int) -> dict[str, float | int]:
        """The limits a job of `tests` tests runs under, as the sandbox server reads them."""
        wall = self.timeout * max(1, tests) + 1.0
        return {
            "wall_seconds": wall,
            "cpu_seconds": int(wall) + 1,
            "memory_bytes": self.memory_bytes,
            "nproc": self.nproc,
            "output_bytes": self.output_bytes,
            "file_bytes": self.file_bytes,
            "open_files": self.open_files,
        }

    def with_timeout(self, timeout: float) -> Limits:
        return replace(self, timeout=timeout)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)
