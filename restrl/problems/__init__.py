"""Problems: the shared `Problem` model, dataset readers and the problems Parquet table."""

from restrl.problems.apps import read_apps
from restrl.problems.bigcodebench import read_bigcodebench
from restrl.problems.ds1000 import read_ds1000
from restrl.problems.humaneval import default_humaneval_path, read_humaneval
from restrl.problems.model import Problem, ReadResult, RejectedRow
from restrl.problems.readers import read_problems
from restrl.problems.schema import (
    PROBLEMS_SCHEMA,
    problems_to_table,
    read_problems_parquet,
    table_to_problems,
    write_problems_parquet,
)

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
