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


class OutputCollector:
    """Keeps the head and tail of a command's output bytes, so memory stays flat for any output
    size; `text()` decodes them (UTF-8 with replacement) with a notice of how much was cut."""

    def __init__(self, limit: int):
        self.head_cap = limit * 2 // 3
        self.tail_cap = limit - self.head_cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self.tail_cap:
                del self.tail[: len(self.tail) - self.tail_cap]

    def text(self) -> tuple[str, bool]:
        if len(self.tail) > self.tail_cap:
            del self.tail[: len(self.tail) - self.tail_cap]
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        cut = self.total - len(self.head) - len(self.tail)
        if cut <= 0:
            return head + tail, False
        notice = f"\n[... output truncated: {cut} of {self.total} bytes cut ...]\n"
        return head + notice + tail, True
