"""The Sandbox contract: run a command, move files, close.

A sandbox never raises for what a command does: a non-zero exit, a timeout or
binary output are all an `ExecResult`. It raises `SandboxError` only when the
sandbox itself is gone (a container removed from outside, an engine that died).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, runtime_checkable

DEFAULT_OUTPUT_LIMIT = 64_000
"""Characters of output kept per command; the rest is cut with a notice."""


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    """The command's exit status; -1 when it was killed for its timeout."""
    output: str
    """stdout and stderr interleaved, decoded as UTF-8 with replacement, truncated with a notice."""
    timed_out: bool = False
    truncated: bool = False
    oom_killed: bool = False


@runtime_checkable
class Sandbox(Protocol):
    def exec(self, cmd: str, timeout: float = 30.0) -> ExecResult:
        """Run `cmd` with /bin/sh (or the sandbox's persistent shell) and wait at most `timeout` seconds."""
        ...

    def read_file(self, path: str) -> bytes: ...

    def write_file(self, path: str, content: str | bytes) -> None: ...

    def close(self) -> None:
        """Release everything; safe to call twice and from a `finally`."""
        ...

    def __enter__(self) -> Sandbox: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def truncate_output(text: str, limit: int = DEFAULT_OUTPUT_LIMIT) -> tuple[str, bool]:
    """Keep the head and tail of `text` within `limit` characters, with a notice of how much was cut."""
    if len(text) <= limit:
        return text, False
    head = limit * 2 // 3
    tail = limit - head
    cut = len(text) - head - tail
    notice = f"\n[... output truncated: {cut} of {len(text)} characters cut ...]\n"
    return text[:head] + notice + text[-tail:], True
