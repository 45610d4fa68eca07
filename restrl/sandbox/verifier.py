"""`verify(problems, programs) -> list[Verdict]` over a persistent pool of sandbox workers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from restrl.problems.model import Problem
from restrl.sandbox.checkers import DEFAULT_OPTIONS, CheckOptions, check_program
from restrl.sandbox.limits import Limits
from restrl.sandbox.pool import SandboxPool
from restrl.sandbox.verdict import Verdict


class Verifier:
    """Judges programs in the sandbox; keep one open across calls to reuse its warm workers.

    `limits` bound time and memory per kind of test (`Limits`); `options` choose how outcomes
    are judged (`CheckOptions`; the defaults give the original ReST-RL rewards). Uses at most
    one worker per core: timeouts must measure the program, not the load. `pool`: one already
    started for these `workers`, `isolation` and `domains` (`start_pool`); the verifier closes it.
    """

    def __init__(self, workers: int | None = None, limits: Limits | None = None,
                 isolation: str = "auto", domains: Sequence[str] = (),
                 options: CheckOptions | None = None, pool: SandboxPool | None = None):
        self.limits = limits or Limits()
        self.options = options or DEFAULT_OPTIONS
        self.pool = pool or SandboxPool(workers, isolation, None, domains)

    @property
    def isolation(self) -> str:
        return self.pool.isolation

    def verify_one(self, problem: Problem, program: str) -> Verdict:
        """Judge `program`, the full program (`problem.init_code + sample`)."""
        limits = self.limits
        self.pool.check_domain(problem.domain)
        worker = self.pool.acquire()
        try:
            def run(job: dict):
                job["limits"]["nproc"] = self.pool.nproc_limit(limits)
                return worker.run(job)

            return check_program(problem, program, run, limits, self.pool.isolation,
                                 self.options)
        finally:
            self.pool.release(worker)

    def verify(self, problems: Sequence[Problem], programs: Sequence[str],
               on_done: Callable[[int, Verdict], None] | None = None) -> list[Verdict]:
        """One verdict per (problem, program) pair, in input order."""
        if len(problems) != len(programs):
            raise ValueError(f"{len(problems)} problems but {len(programs)} programs")
        verdicts: list[Verdict | None] = [None] * len(programs)

        def judge(index: int) -> None:
            verdicts[index] = self.verify_one(problems[index], programs[index])
            if on_done is not None:
                on_done(index, verdicts[index])

        with ThreadPoolExecutor(self.pool.size) as executor:
            for future in [executor.submit(judge, i) for i in range(len(programs))]:
                future.result()
        return [v for v in verdicts if v is not None]

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def verify(problems: Sequence[Problem], programs: Sequence[str], *, workers: int | None = None,
           limits: Limits | None = None, isolation: str = "auto",
           options: CheckOptions | None = None) -> list[Verdict]:
    """Judge each program against its problem (same index); a temporary worker pool."""
    domains = sorted({p.domain for p in problems})
    with Verifier(workers, limits, isolation, domains, options) as verifier:
        return verifier.verify(problems, programs)
