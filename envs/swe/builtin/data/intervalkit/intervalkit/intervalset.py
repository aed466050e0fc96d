"""IntervalSet: a union of disjoint, non-touching intervals kept sorted."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from intervalkit.interval import Interval


def _normalize(intervals: Iterable[Interval]) -> list[Interval]:
    items = sorted((i for i in intervals if not i.empty), key=lambda i: (i.lo, not i.lo_closed))
    out: list[Interval] = []
    for item in items:
        if out and out[-1].touches(item):
            out[-1] = out[-1].hull(item)
        else:
            out.append(item)
    return out


class IntervalSet:
    """An immutable set of points given as a union of intervals."""

    def __init__(self, intervals: Iterable[Interval] = ()) -> None:
        self._items = _normalize(intervals)

    def __iter__(self) -> Iterator[Interval]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IntervalSet) and self._items == other._items

    def __contains__(self, x: Any) -> bool:
        return any(x in i for i in self._items)

    @property
    def measure(self) -> Any:
        """Total length of the set."""
        return sum(i.length for i in self._items)

    def union(self, other: IntervalSet) -> IntervalSet:
        return IntervalSet([*self._items, *other._items])

    def intersection(self, other: IntervalSet) -> IntervalSet:
        return IntervalSet(a & b for a in self._items for b in other._items)

    def complement(self, within: Interval) -> IntervalSet:
        """The points of `within` not in this set."""
        gaps: list[Interval] = []
        lo, lo_closed = within.lo, within.lo_closed
        for item in self.intersection(IntervalSet([within])):
            gaps.append(Interval(lo, item.lo, lo_closed, not item.lo_closed))
            lo, lo_closed = item.hi, not item.hi_closed
        gaps.append(Interval(lo, within.hi, lo_closed, within.hi_closed))
        return IntervalSet(gaps)

    def difference(self, other: IntervalSet) -> IntervalSet:
        if not self._items:
            return IntervalSet()
        span = self._items[0].hull(self._items[-1])
        return self.intersection(other.complement(span))

    __or__ = union
    __and__ = intersection
    __sub__ = difference

    def gaps(self) -> list[Interval]:
        """The holes between consecutive intervals of the set."""
        return [
            Interval(a.hi, b.lo, not a.hi_closed, not b.lo_closed)
            for a, b in zip(self._items, self._items[1:], strict=False)
        ]

    def __str__(self) -> str:
        return "{" + ", ".join(str(i) for i in self._items) + "}"

    def __repr__(self) -> str:
        return "IntervalSet([" + ", ".join(str(i) for i in self._items) + "])"
