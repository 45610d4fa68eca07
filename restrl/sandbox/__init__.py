"""Sandboxed execution of untrusted programs and per-domain checkers (see `verify`).

The names below load on first use, so that `restrl.sandbox.pool` imports without the
configs (`restrl verify` starts its workers while those load).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from restrl.sandbox.checkers import CheckOptions
    from restrl.sandbox.limits import Limits
    from restrl.sandbox.verdict import STATUSES, Verdict
    from restrl.sandbox.verifier import Verifier, verify

_HOMES = {"CheckOptions": "checkers", "Limits": "limits", "STATUSES": "verdict",
          "Verdict": "verdict", "Verifier": "verifier", "verify": "verifier"}

__all__ = ["CheckOptions", "Limits", "STATUSES", "Verdict", "Verifier", "verify"]


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'restrl.sandbox' has no attribute {name!r}")
    return getattr(importlib.import_module(f"restrl.sandbox.{_HOMES[name]}"), name)
