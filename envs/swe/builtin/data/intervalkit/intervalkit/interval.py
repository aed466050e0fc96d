"""A single interval ``[lo, hi]``, ``(lo, hi)``, ``[lo, hi)`` or ``(lo, hi]``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_INTERVAL_RE = re.compile(r"^\s*([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])\s*$")


@dataclass(frozen=True)
class Interval:
    """An interval of ordered values; empty when it contains no point (e.g. ``[3, 1]``, ``(2, 2)``)."""

    lo: Any
    hi: Any
    lo_closed: bool = True
    hi_closed: bool = True

    @property
    def empty(self) -> bool:
        if self.lo > self.hi:
            return True
        if self.lo == self.hi:
            return not (self.lo_closed and self.hi_closed)
        return False

    @property
    def length(self) -> Any:
        """``hi - lo`` (0 for an empty interval)."""
        return 0 if self.empty else self.hi - self.lo

    def __contains__(self, x: Any) -> bool:
        if self.empty:
            return False
        above = self.lo <= x if self.lo_closed else self.lo < x
        below = x <= self.hi if self.hi_closed else x < self.hi
        return above and below

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share at least one point."""
        return not self.intersection(other).empty

    def touches(self, other: Interval) -> bool:
        """Whether the union of the two is one interval (they overlap or are adjacent)."""
        if self.empty or other.empty:
            return False
        first, second = sorted((self, other), key=lambda i: (i.lo, not i.lo_closed))
        if first.hi > second.lo:
            return True
        if first.hi == second.lo:
            return first.hi_closed or second.lo_closed
        return False

    def intersection(self, other: Interval) -> Interval:
        if self.lo > other.lo:
            lo, lo_closed = self.lo, self.lo_closed
        elif other.lo > self.lo:
            lo, lo_closed = other.lo, other.lo_closed
        else:
            lo, lo_closed = self.lo, self.lo_closed and other.lo_closed
        if self.hi < other.hi:
            hi, hi_closed = self.hi, self.hi_closed
        elif other.hi < self.hi:
            hi, hi_closed = other.hi, other.hi_closed
        else:
            hi, hi_closed = self.hi, self.hi_closed and other.hi_closed
        return Interval(lo, hi, lo_closed, hi_closed)

    def hull(self, other: Interval) -> Interval:
        """The smallest interval containing both."""
        if self.empty:
            return other
        if other.empty:
            return self
        if self.lo < other.lo:
            lo, lo_closed = self.lo, self.lo_closed
        elif other.lo < self.lo:
            lo, lo_closed = other.lo, other.lo_closed
        else:
            lo, lo_closed = self.lo, self.lo_closed or other.lo_closed
        if self.hi > other.hi:
            hi, hi_closed = self.hi, self.hi_closed
        elif other.hi > self.hi:
            hi, hi_closed = other.hi, other.hi_closed
        else:
            hi, hi_closed = self.hi, self.hi_closed or other.hi_closed
        return Interval(lo, hi, lo_closed, hi_closed)

    def __and__(self, other: Interval) -> Interval:
        return self.intersection(other)

    def __sub__(self, other: Interval):  # -> IntervalSet (imported lazily: circular)
        from intervalkit.intervalset import IntervalSet

        return IntervalSet([self]) - IntervalSet([other])

    def __str__(self) -> str:
        left = "[" if self.lo_closed else "("
        right = "]" if self.hi_closed else ")"
        return f"{left}{self.lo}, {self.hi}{right}"


def _number(text: str) -> int | float:
    if text in ("inf", "+inf"):
        return float("inf")
    if text == "-inf":
        return float("-inf")
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_interval(text: str) -> Interval:
    """Parse ``"[1, 5)"``, ``"(-inf, 0]"`` or ``"[2.5,3]"``."""
    m = _INTERVAL_RE.match(text)
    if m is None:
        raise ValueError(f"not an interval: {text!r} (expected e.g. '[1, 5)')")
    try:
        lo, hi = _number(m.group(2)), _number(m.group(3))
    except ValueError:
        raise ValueError(f"interval bounds must be numbers: {text!r}") from None
    return Interval(lo, hi, m.group(1) == "[", m.group(4) == "]")
