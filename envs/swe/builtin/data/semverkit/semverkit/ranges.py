"""npm-style version ranges: comparators, caret, tilde, x-ranges, hyphen ranges and ``||``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from semverkit.version import InvalidVersion, Version

_OPS = ("<=", ">=", "<", ">", "=")
_PARTIAL_RE = re.compile(
    r"^v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?$"
)


@dataclass(frozen=True)
class Comparator:
    """One ``<op><version>`` test, such as ``>=1.2.0``."""

    op: str
    version: Version

    def test(self, v: Version) -> bool:
        c = v.compare(self.version)
        if self.op == "=":
            return c == 0
        if self.op == "<":
            return c < 0
        if self.op == "<=":
            return c <= 0
        if self.op == ">":
            return c > 0
        return c >= 0

    def __str__(self) -> str:
        return f"{self.op}{self.version}"


def _parse_partial(text: str) -> tuple[int | None, int | None, int | None, tuple[str, ...]]:
    """``"1.2"`` -> (1, 2, None, ()); ``x``/``*`` and missing parts become None."""
    m = _PARTIAL_RE.match(text)
    if m is None:
        raise InvalidVersion(f"not a version or partial version: {text!r}")
    nums: list[int | None] = []
    for part in m.groups()[:3]:
        nums.append(None if part is None or part in "xX*" else int(part))
    # Anything after a wildcard is a wildcard too: "1.x.3" means "1.x".
    for i in range(3):
        if nums[i] is None:
            nums[i + 1 :] = [None] * (2 - i)
            break
    pre = tuple(m.group(4).split(".")) if m.group(4) else ()
    return nums[0], nums[1], nums[2], pre


def _expand_caret(text: str) -> list[Comparator]:
    major, minor, patch, pre = _parse_partial(text)
    if major is None:
        return []
    lo = Version(major, minor or 0, patch or 0, pre)
    if major > 0 or minor is None:
        hi = Version(major + 1, 0, 0)
    elif minor > 0 or patch is None:
        hi = Version(0, minor + 1, 0)
    else:
        hi = Version(0, 0, patch + 1)
    return [Comparator(">=", lo), Comparator("<", hi)]


def _expand_tilde(text: str) -> list[Comparator]:
    major, minor, patch, pre = _parse_partial(text)
    if major is None:
        return []
    lo = Version(major, minor or 0, patch or 0, pre)
    hi = Version(major + 1, 0, 0) if minor is None else Version(major, minor + 1, 0)
    return [Comparator(">=", lo), Comparator("<", hi)]


def _expand_xrange(op: str, text: str) -> list[Comparator]:
    major, minor, patch, pre = _parse_partial(text)
    if major is None:
        return [] if op in ("", "=", ">=", "<=") else [Comparator("<", Version(0, 0, 0))]
    if patch is not None:
        return [Comparator(op or "=", Version(major, minor or 0, patch, pre))]
    lo = Version(major, minor or 0, 0)
    hi = Version(major + 1, 0, 0) if minor is None else Version(major, minor + 1, 0)
    if op in ("", "="):
        return [Comparator(">=", lo), Comparator("<", hi)]
    if op == ">":
        return [Comparator(">=", hi)]
    if op == "<=":
        return [Comparator("<", hi)]
    if op == "<":
        return [Comparator("<", lo)]
    return [Comparator(">=", lo)]


def _expand_hyphen(lo_text: str, hi_text: str) -> list[Comparator]:
    lo_major, lo_minor, lo_patch, lo_pre = _parse_partial(lo_text)
    hi_major, hi_minor, hi_patch, hi_pre = _parse_partial(hi_text)
    out: list[Comparator] = []
    if lo_major is not None:
        out.append(Comparator(">=", Version(lo_major, lo_minor or 0, lo_patch or 0, lo_pre)))
    if hi_major is None:
        return out
    if hi_minor is None:
        out.append(Comparator("<", Version(hi_major + 1, 0, 0)))
    elif hi_patch is None:
        out.append(Comparator("<", Version(hi_major, hi_minor + 1, 0)))
    else:
        out.append(Comparator("<=", Version(hi_major, hi_minor, hi_patch, hi_pre)))
    return out


def _parse_set(text: str) -> list[Comparator]:
    text = text.strip()
    hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", text)
    if hyphen:
        return _expand_hyphen(hyphen.group(1), hyphen.group(2))
    out: list[Comparator] = []
    # Allow a space between an operator and its version: ">= 1.2".
    text = re.sub(r"(<=|>=|<|>|=|\^|~)\s+", r"\1", text)
    for token in text.split():
        if token.startswith("^"):
            out.extend(_expand_caret(token[1:]))
        elif token.startswith("~"):
            out.extend(_expand_tilde(token[1:].lstrip(">")))
        else:
            op = next((o for o in _OPS if token.startswith(o)), "")
            out.extend(_expand_xrange(op, token[len(op) :]))
    return out


class Range:
    """A set of comparator sets joined by ``||``; a version matches when any set matches."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sets = [_parse_set(part) for part in text.split("||")]

    def _set_matches(
        self, comparators: list[Comparator], v: Version, include_prerelease: bool
    ) -> bool:
        if not all(c.test(v) for c in comparators):
            return False
        if not v.is_prerelease or include_prerelease:
            return True
        # npm rule: a pre-release matches only if some comparator names a pre-release of the
        # same major.minor.patch, so "^1.2.0" does not match "1.3.0-beta".
        return any(
            c.version.is_prerelease and c.version.release() == v.release() for c in comparators
        )

    def contains(self, version: Version | str, *, include_prerelease: bool = False) -> bool:
        """Whether `version` satisfies this range."""
        v = Version.parse(version) if isinstance(version, str) else version
        return any(self._set_matches(s, v, include_prerelease) for s in self.sets)

    def __contains__(self, version: object) -> bool:
        if not isinstance(version, (Version, str)):
            return False
        return self.contains(version)

    def filter(self, versions: Iterable[Version | str]) -> list[Version]:
        """The versions (parsed) that satisfy the range, in input order."""
        parsed = [Version.parse(v) if isinstance(v, str) else v for v in versions]
        return [v for v in parsed if self.contains(v)]

    def max_satisfying(self, versions: Iterable[Version | str]) -> Version | None:
        """The highest version that satisfies the range, or None."""
        matching = self.filter(versions)
        return max(matching) if matching else None

    def min_satisfying(self, versions: Iterable[Version | str]) -> Version | None:
        """The lowest version that satisfies the range, or None."""
        matching = self.filter(versions)
        return min(matching) if matching else None

    def __str__(self) -> str:
        return " || ".join(" ".join(str(c) for c in s) or "*" for s in self.sets)

    def __repr__(self) -> str:
        return f"Range({self.text!r})"
