"""Parquet schemas of every table restrl writes (DESIGN.md "Data contracts"), in one place."""

from __future__ import annotations

import pyarrow as pa

# One sampled completion. `program` = init_code + code is what the verifier runs.
# A problem is known by (domain, problem_id) in every table: ids repeat across problem sets.
COMPLETIONS = pa.schema([
    ("domain", pa.string()),
    ("problem_id", pa.string()),
    ("sample_idx", pa.int64()),
    ("prompt", pa.string()),          # the formatted prompt, reply prefix included
    ("raw", pa.string()),             # the model's text as generated
    ("code", pa.string()),            # raw cut at the domain's stop strings
    ("program", pa.string()),         # full program: init_code + code.rstrip()
    ("hit_stop", pa.bool_()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("finish_reason", pa.string()),
])

# One verdict; `row` is the input row it belongs to (rows keep their input order).
VERDICTS = pa.schema([
    ("row", pa.int64()),
    ("domain", pa.string()),
    ("problem_id", pa.string()),
    ("sample_idx", pa.int64()),
    ("reward", pa.float64()),
    ("strict", pa.bool_()),
    ("status", pa.string()),
    ("tests_passed", pa.int64()),
    ("tests_total", pa.int64()),
    ("error", pa.string()),
    ("seconds", pa.float64()),
    ("isolation", pa.string()),
])

# ReST-GRPO training rows (DESIGN step 3): the trainer continues `prompt`; the reward verifies
# partial_state + the continuation.
GRPO_DATA = pa.schema([
    ("problem_id", pa.string()),
    ("domain", pa.string()),
    ("prompt", pa.string()),          # formatted prompt + reply prefix + the prefix lines
    ("init_state", pa.string()),      # the problem's init_code
    ("partial_state", pa.string()),   # init_code + the prefix lines
    ("prefix_lines", pa.int64()),     # k (0 for a base row)
    ("source", pa.string()),          # "base" or "prefix"
])

DPO_DATA = pa.schema([
    ("problem_id", pa.string()),
    ("domain", pa.string()),
    ("prompt", pa.string()),
    ("chosen", pa.string()),
    ("rejected", pa.string()),
    ("chosen_reward", pa.float64()),
    ("rejected_reward", pa.float64()),
])

SFT_DATA = pa.schema([
    ("problem_id", pa.string()),
    ("domain", pa.string()),
    ("prompt", pa.string()),
    ("completion", pa.string()),
    ("reward", pa.float64()),
])

# One judged answer of an evaluation method; `budget` = completions generated per problem.
EVAL_RESULTS = pa.schema([
    ("domain", pa.string()),
    ("problem_id", pa.string()),
    # sample | majority_vote | best_of_n | best_of_n_vote | vm_mcts | vm_mcts_vote | oracle_mcts
    ("method", pa.string()),
    ("budget", pa.int64()),
    ("sample_idx", pa.int64()),
    ("program", pa.string()),
    ("score", pa.float64()),          # the scorer's value (best_of_n, vm_mcts)
    ("reward", pa.float64()),
    ("strict", pa.bool_()),
])

# One tree node. `value` = value_sum / visits (prior, else 0, when never visited) is written for
# readers; `tables_to_trees` recomputes it. `prior` is null outside the test phase.
MCTS_NODES = pa.schema([
    ("domain", pa.string()),
    ("problem_id", pa.string()),
    ("node_id", pa.int64()),
    ("parent_id", pa.int64()),        # -1 for the root
    ("depth", pa.int64()),
    ("action", pa.string()),          # the line (or terminal sample) that led here; "" at the root
    ("state", pa.string()),           # init_code + the actions from the root
    ("visits", pa.int64()),
    ("value_sum", pa.float64()),
    ("value", pa.float64()),
    ("prior", pa.float64()),
    ("terminal", pa.bool_()),
    ("visible", pa.bool_()),
    ("expanded", pa.bool_()),
])

# One completion stored on the node it was sampled from: one per sample, duplicates included.
MCTS_COMPLETIONS = pa.schema([
    ("domain", pa.string()),
    ("problem_id", pa.string()),
    ("node_id", pa.int64()),
    ("completion_idx", pa.int64()),   # order on its node
    ("program", pa.string()),         # full program: node state + sample.rstrip() + "\n"
    ("answer", pa.string()),          # program without init_code
    ("reward", pa.float64()),         # train: verifier reward; test: scorer score; null: unvalued
    ("verified", pa.bool_()),         # whether reward came from the verifier
])

# One value-model training row (DESIGN step 6; REFERENCE section 5).
VALUE_DATA = pa.schema([
    ("prompt", pa.string()),          # the raw problem text (`Problem.prompt`), not formatted
    ("answer", pa.string()),          # full state or program, init_code included
    ("reward", pa.float64()),         # completion: verifier reward; node state: its V
    ("source", pa.string()),          # "terminal" (completion) or "intermediate" (node state)
    ("problem_id", pa.string()),
    ("domain", pa.string()),
])
