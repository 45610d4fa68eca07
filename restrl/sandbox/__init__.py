"""Sandboxed execution of untrusted programs and per-domain checkers (see `verify`)."""

from restrl.sandbox.checkers import CheckOptions
from restrl.sandbox.limits import Limits
from restrl.sandbox.verdict import STATUSES, Verdict
from restrl.sandbox.verify import Verifier, verify

__all__ = ["CheckOptions", "Limits", "STATUSES", "Verdict", "Verifier", "verify"]
