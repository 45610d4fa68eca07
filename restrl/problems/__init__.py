"""Problems: the shared `Problem` model, dataset readers and the problems Parquet table."""

from typing import Any

from restrl.problems.apps import read_apps
from restrl.problems.bigcodebench import read_bigcodebench
from restrl.problems.ds1000 import read_ds1000
from restrl.problems.humaneval import default_humaneval_path, read_humaneval
from restrl.problems.model import Problem, ReadResult, RejectedRow
from restrl.problems.readers import read_problems

# The Parquet side needs pyarrow (~0.1 s to import): loaded on first use, so commands that
# only read JSONL datasets start faster.
_SCHEMA_API = ("PROBLEMS_SCHEMA", "problems_to_table", "read_problems_parquet",
               "table_to_problems", "write_problems_parquet")


def __getattr__(name: str) -> Any:
    if name in _SCHEMA_API:
        from restrl.problems import schema

        return getattr(schema, name)
    raise AttributeError(f"module 'restrl.problems' has no attribute {name!r}")


__all__ = [
    "PROBLEMS_SCHEMA",
    "Problem",
    "ReadResult",
    "RejectedRow",
    "default_humaneval_path",
    "problems_to_table",
    "read_apps",
    "read_bigcodebench",
    "read_ds1000",
    "read_humaneval",
    "read_problems",
    "read_problems_parquet",
    "table_to_problems",
    "write_problems_parquet",
]
