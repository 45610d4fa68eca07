"""DS1000 judged in the checker (restrl's default) vs in the program's process (the original's).

Every problem's reference solution (and, with --completions, your own programs) is judged twice,
same workers, same machine, one run: with `checks.ds1000_tests_run="checker"` (code_context in
the checker process, the solution's `exec` in the program's, data carried between them) and
with `"program"` (the whole test in the program's process, as the original harness). Each pool
is warmed by its first 4 programs, untimed. Prints both times, the ratio (what keeping the
expected result out of the program's reach costs) and the verdict agreement; the last line is
JSON. The default problems are restrl's small DS1000 fixture; pass the real dataset with
--problems (DS-1000's JSONL: prompt, reference_code, code_context, metadata).

    python benchmarks/verify_ds1000.py [--problems ds1000.jsonl] [--workers 2] [--timeout 60]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from restrl.cli import read_completions
from restrl.problems import read_problems
from restrl.sandbox import Limits, Verifier
from restrl.sandbox.checkers import CheckOptions

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "problems" / "ds1000.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=Path, default=FIXTURE)
    parser.add_argument("--completions", type=Path, default=None,
                        help="JSONL {problem_id, program} rows judged besides the references")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per program")
    args = parser.parse_args()

    problems = read_problems(args.problems, "ds1000").problems
    pairs = [(p, p.meta["reference"]) for p in problems]
    if args.completions is not None:
        by_id = {p.problem_id: p for p in problems}
        pairs += [(by_id[pid], program) for pid, program, _ in read_completions(args.completions)]

    results = {}
    for where in ("checker", "program"):
        limits = Limits(job_timeout=args.timeout)
        options = CheckOptions(ds1000_tests_run=where)
        with Verifier(args.workers, limits, domains=["ds1000"], options=options) as verifier:
            verifier.verify([p for p, _ in pairs[:4]], [s for _, s in pairs[:4]])
            start = time.perf_counter()
            verdicts = verifier.verify([p for p, _ in pairs], [s for _, s in pairs])
            results[where] = (time.perf_counter() - start, verdicts, verifier.isolation)

    checker_s, checker_v, isolation = results["checker"]
    program_s, program_v, _ = results["program"]
    agreement = sum(a.reward == b.reward for a, b in zip(checker_v, program_v, strict=True))
    agreement /= len(pairs)
    ratio = checker_s / program_s
    print(f"programs:           {len(pairs)} ({args.problems.name}), {args.workers} workers, "
          f"isolation {isolation}")
    print(f"tests in checker:   {checker_s:7.2f} s  ({sum(v.strict for v in checker_v)} passed)")
    print(f"tests in program:   {program_s:7.2f} s  ({sum(v.strict for v in program_v)} passed; "
          "the original's way)")
    print(f"cost of the checker: {ratio:.2f}x   agreement: {agreement:.1%}")
    print(json.dumps({
        "benchmark": "verify_ds1000", "programs": len(pairs), "workers": args.workers,
        "checker_seconds": round(checker_s, 3), "program_seconds": round(program_s, 3),
        "checker_over_program": round(ratio, 2), "agreement": agreement, "isolation": isolation,
    }))


if __name__ == "__main__":
    main()
