"""Wall time of a first Stage 1 run and of the fully cached re-run on the toy domain.

Runs the self-training flow twice with the same parameters, in a fresh artifact store, MLflow
database and Prefect home (ephemeral API), and prints both times and their ratio; the last line
is JSON. Target: the re-run under 10% of the first and under 20 s.

    python benchmarks/stage1_cache.py [--problems 16] [--grpo-steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--grpo-steps", type=int, default=4)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="restrl-bench-"))
    os.environ["PREFECT_HOME"] = str(tmp / "prefect")
    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(tmp / "prefect-results")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"

    from restrl_flows.params import SelfTrainingParams
    from restrl_flows.self_training import self_training

    params = SelfTrainingParams.model_validate({
        "problems": {"n": args.problems},
        "eval_problems": None,
        "sampling": {"n": 4, "max_tokens": 64, "shard_problems": 8},
        "grpo": {"max_steps": args.grpo_steps, "num_generations": 4, "batch_size_per_device": 8,
                 "max_completion_length": 64},
        "run": {"store": str(tmp / "artifacts"), "work_dir": str(tmp / "work")},
    })
    from restrl.toy.tiny_model import tiny_model_path

    tiny_model_path()  # built once per machine; not part of either timing
    start = time.perf_counter()
    first = self_training(params)
    first_seconds = time.perf_counter() - start
    start = time.perf_counter()
    cached = self_training(params)
    cached_seconds = time.perf_counter() - start
    same = all(first[k] == cached[k] for k in ("completions", "verdicts", "grpo_data", "policy"))
    ratio = cached_seconds / first_seconds
    print(f"first run:   {first_seconds:7.2f} s")
    print(f"cached run:  {cached_seconds:7.2f} s  ({ratio:.1%} of the first; same artifacts: "
          f"{same})")
    print(json.dumps({"benchmark": "stage1_cache", "first_seconds": round(first_seconds, 2),
                      "cached_seconds": round(cached_seconds, 2), "cached_ratio": round(ratio, 4),
                      "same_artifacts": same}))


if __name__ == "__main__":
    main()
