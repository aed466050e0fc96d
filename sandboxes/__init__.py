"""Sandboxes: where tool code runs. `Sandbox` is the contract; `docker`, `bwrap` (isolated)
and `local` (no isolation) are backends, and `choice.choose` picks one (SECURITY.md)."""

from mentorgym.sandboxes.base import ExecResult, Sandbox

__all__ = ["ExecResult", "Sandbox"]
