"""The judgement of one program: reward, status and what was measured."""

from __future__ import annotations

from dataclasses import asdict, dataclass

STATUSES = ("passed", "failed", "error", "timeout", "memory", "output_limit", "crashed", "invalid")
# When tests fail for different reasons, the verdict names the most telling one.
_PRIORITY = {s: i for i, s in enumerate(
    ("invalid", "memory", "output_limit", "timeout", "crashed", "error", "failed", "passed"))}


@dataclass(frozen=True)
class Verdict:
    """Outcome of running one program against its problem's tests.

    reward is in [0, 1] (fraction of tests passed for APPS, (run - failures - errors) / run for
    BigCodeBench, 1 or 0 for DS1000, HumanEval and toy); strict = reward > 0.999; isolation
    says how the program was confined.
    """

    reward: float
    status: str
    tests_passed: int
    tests_total: int
    error: str
    seconds: float
    isolation: str

    @property
    def strict(self) -> bool:
        return self.reward > 0.999

    def to_row(self) -> dict:
        row = asdict(self)
        row["strict"] = self.strict
        return row


def worst_status(statuses: list[str]) -> str:
    """The status a multi-test verdict reports: `passed` only if every test passed."""
    failing = [s for s in statuses if s != "passed"]
    if not failing:
        return "passed"
    return min(failing, key=lambda s: _PRIORITY[s])

