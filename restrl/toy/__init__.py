"""The toy domain (small synthetic programming tasks) and the embedded tiny model.

`import restrl.toy` stays light: torch, transformers and tokenizers are imported only when the
tiny model is built or loaded.
"""

from __future__ import annotations

from typing import Any

from restrl.toy.tasks import (
    FAMILIES,
    FAMILY_BY_NAME,
    SPLITS,
    ToyFamily,
    families_fingerprint,
    make_problem,
    reference_body,
    split_combinations,
    toy_problems,
    write_toy_problems,
)

_TINY_MODEL_API = ("RECIPE", "build_tiny_model", "build_tokenizer", "evaluate_pass_at_1",
                   "generate_programs", "recipe_hash", "tiny_model_info", "tiny_model_path")

__all__ = [
    "FAMILIES",
    "FAMILY_BY_NAME",
    "SPLITS",
    "ToyFamily",
    "families_fingerprint",
    "make_problem",
    "reference_body",
    "split_combinations",
    "toy_problems",
    "write_toy_problems",
    *_TINY_MODEL_API,
]


def __getattr__(name: str) -> Any:
    if name in _TINY_MODEL_API:
        from restrl.toy import tiny_model

        return getattr(tiny_model, name)
    raise AttributeError(f"module 'restrl.toy' has no attribute {name!r}")
