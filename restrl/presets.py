"""Named presets: parameter overrides for a flow, kept apart from the defaults.

Every config's defaults are the original ReST-RL code's (REFERENCE.md). The `toy` preset holds
the small budgets that let the embedded tiny model run the whole pipeline on 2 CPU cores in
minutes (`restrl demo`, `restrl run ... --preset toy`). Its learning rates were measured on the
toy domain (see the README); the other sizes only bound the run time.

A preset is plain JSON-like data in the shape of a flow's parameters, so it merges the same way
as a `--params-file` (defaults <- preset <- params file <- `--set`).
"""

from __future__ import annotations

import copy
from typing import Any

_TOY_SAMPLING = {"n": 8, "temperature": 1.0, "max_tokens": 96, "problems_per_call": 16,
                 "shard_problems": 16}
_TOY_EVAL_SAMPLING = {"n": 4, "temperature": 0.7, "max_tokens": 96}
# lr 1e-4: best of 2e-5 / 5e-5 / 1e-4 for the tiny model; beta 0 and "dapo" measured with it.
_TOY_GRPO = {"max_prompt_length": 512, "max_completion_length": 96, "num_generations": 8,
             "temperature": 1.0, "learning_rate": 1e-4, "epochs": 1.0, "save_steps": 0,
             "batch_size_per_device": 16, "gradient_accumulation_steps": 1, "beta": 0.0,
             "loss_type": "dapo"}
_TOY_DPO = {"learning_rate": 5e-5, "batch_size_per_device": 8, "save_steps": 0,
            "max_length": 512}
_TOY_SFT = {"learning_rate": 5e-5, "batch_size_per_device": 8, "save_steps": 0,
            "max_length": 512}
_TOY_MCTS = {"iteration_limit": 6, "num_sample": 4, "num_decision": 3, "temperature": 1.0,
             "max_tokens": 96}
_TOY_VALUE_MODEL = {"learning_rate": 1e-3, "epochs": 3.0, "batch_size_per_device": 16,
                    "max_length": 512, "save_steps": 0}
_TOY_EVAL = {"sampling": {"n": 8, "temperature": 0.7, "max_tokens": 96}, "ks": [1, 8],
             "best_of_n": [8], "mcts": {"iteration_limit": 2, "num_sample": 4,
                                        "temperature": 0.7, "max_tokens": 96}}

_TOY_SELF_TRAINING = {
    "problems": [{"domain": "toy", "split": "train", "n": 128}],
    "eval_problems": {"domain": "toy", "split": "test", "n": None},
    "sampling": _TOY_SAMPLING,
    "eval_sampling": _TOY_EVAL_SAMPLING,
    "grpo": _TOY_GRPO,
    "dpo": _TOY_DPO,
    "sft": _TOY_SFT,
}
_TOY_VALUE_MODEL_FLOW = {
    "problems": {"domain": "toy", "split": "train", "n": 64, "seed": 1},
    "mcts": _TOY_MCTS,
    "value_model": _TOY_VALUE_MODEL,
}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "toy": {
        "self-training": _TOY_SELF_TRAINING,
        "value-model": _TOY_VALUE_MODEL_FLOW,
        "evaluate": {"problems": {"domain": "toy", "split": "test", "n": None},
                     "eval": _TOY_EVAL},
        "pipeline": {
            "stage1": {k: v for k, v in _TOY_SELF_TRAINING.items() if k != "eval_problems"},
            "stage2": _TOY_VALUE_MODEL_FLOW,
            "eval_problems": {"domain": "toy", "split": "test", "n": None},
            "eval": _TOY_EVAL,
        },
    },
}
PRESETS["toy"]["retrain"] = {"pipeline": PRESETS["toy"]["pipeline"]}
PRESET_NAMES: tuple[str, ...] = ("none", *PRESETS)


def preset_values(name: str, flow: str) -> dict[str, Any]:
    """The overrides preset `name` makes to `flow`'s parameters ("none": no overrides)."""
    if name == "none":
        return {}
    try:
        by_flow = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of {PRESET_NAMES}") from None
    return copy.deepcopy(by_flow.get(flow, {}))
