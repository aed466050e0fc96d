"""Sandboxes: where tool code runs. `Sandbox` is the contract; `local` and `docker` are backends."""

from mentorgym.sandboxes.base import ExecResult, Sandbox

__all__ = ["ExecResult", "Sandbox"]
