"""The Version type: parsing, ordering and bumping per semver.org 2.0.0."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import total_ordering

_NUM = r"0|[1-9]\d*"
_IDENT = r"[0-9A-Za-z-]+"
_VERSION_RE = re.compile(
    rf"^v?(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>{_IDENT}(?:\.{_IDENT})*))?"
    rf"(?:\+(?P<build>{_IDENT}(?:\.{_IDENT})*))?$"
)


class InvalidVersion(ValueError):
    """Raised when a string is not a valid semantic version."""


def _split_ids(text: str | None) -> tuple[str, ...]:
    return tuple(text.split(".")) if text else ()


def _cmp_prerelease(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """Compare two pre-release tuples; an empty tuple (a release) sorts after any pre-release."""
    if a == b:
        return 0
    if not a:
        return 1
    if not b:
        return -1
    for x, y in zip(a, b, strict=False):
        if x == y:
            continue
        x_num, y_num = x.isdigit(), y.isdigit()
        if x_num and y_num:
            return -1 if int(x) < int(y) else 1
        if x_num != y_num:
            # Numeric identifiers always have lower precedence than alphanumeric ones.
            return -1 if x_num else 1
        return -1 if x < y else 1
    return -1 if len(a) < len(b) else 1


@total_ordering
@dataclass(frozen=True)
class Version:
    """A semantic version. Build metadata is kept but ignored for ordering and equality."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse `text` such as ``"1.2.3-rc.1+build.5"``; a leading ``v`` is accepted."""
        m = _VERSION_RE.match(text.strip())
        if m is None:
            raise InvalidVersion(f"not a semantic version: {text!r}")
        pre = _split_ids(m.group("pre"))
        for ident in pre:
            if ident.isdigit() and len(ident) > 1 and ident.startswith("0"):
                raise InvalidVersion(f"numeric pre-release identifier has a leading zero: {text!r}")
        return cls(
            int(m.group("major")),
            int(m.group("minor")),
            int(m.group("patch")),
            pre,
            _split_ids(m.group("build")),
        )

    @classmethod
    def coerce(cls, text: str) -> Version:
        """Loosely parse ``"1"``, ``"1.2"`` or ``"v1.2.3.4"`` by taking the first three numbers."""
        nums = re.findall(r"\d+", text)
        if not nums:
            raise InvalidVersion(f"no version number found in {text!r}")
        parts = [int(n) for n in nums[:3]] + [0] * (3 - min(len(nums), 3))
        return cls(parts[0], parts[1], parts[2])

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    def release(self) -> Version:
        """This version without pre-release and build parts."""
        return Version(self.major, self.minor, self.patch)

    def bump_major(self) -> Version:
        return Version(self.major + 1, 0, 0)

    def bump_minor(self) -> Version:
        return Version(self.major, self.minor + 1, 0)

    def bump_patch(self) -> Version:
        """The next patch release; ``1.2.3-rc.1`` bumps to ``1.2.3`` (the release it precedes)."""
        if self.prerelease:
            return Version(self.major, self.minor, self.patch)
        return Version(self.major, self.minor, self.patch + 1)

    def bump_prerelease(self, label: str = "rc") -> Version:
        """``1.2.3`` -> ``1.2.4-rc.0``; ``1.2.4-rc.0`` -> ``1.2.4-rc.1``."""
        if not self.prerelease:
            return Version(self.major, self.minor, self.patch + 1, (label, "0"))
        pre = list(self.prerelease)
        if pre[-1].isdigit():
            pre[-1] = str(int(pre[-1]) + 1)
        else:
            pre.append("0")
        return Version(self.major, self.minor, self.patch, tuple(pre))

    def compare(self, other: Version) -> int:
        """-1, 0 or 1 as self sorts before, equal to, or after `other`."""
        mine = (self.major, self.minor, self.patch)
        theirs = (other.major, other.minor, other.patch)
        if mine != theirs:
            return -1 if mine < theirs else 1
        return _cmp_prerelease(self.prerelease, other.prerelease)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.compare(other) < 0

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text

    def __repr__(self) -> str:
        return f"Version({str(self)!r})"
