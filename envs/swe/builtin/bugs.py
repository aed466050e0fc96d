"""The bugs of the builtin task set: each one is a source edit that turns the clean library into
the buggy `base_commit`, the hidden tests that expose it (the `test_patch`), and the report a user
would file. `build.py` turns these into tasks.jsonl; `prepare_repos()` commits them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bug:
    instance_id: str
    """``<lib>-<n>``; also the task's branch name under ``task/``."""
    lib: str
    """The library folder under data/."""
    file: str
    """The source file (relative to the library root) the bug lives in."""
    fixed: str
    """A snippet of the clean source that occurs exactly once in `file`..."""
    buggy: str
    """...and what it becomes at base_commit."""
    test_file: str
    """The test file the hidden tests are appended to."""
    tests: str
    """Test functions appended to `test_file` by the test_patch (imports must already be there)."""
    problem_statement: str
    created_at: str


BUGS: list[Bug] = [
    Bug(
        instance_id="semverkit-1",
        lib="semverkit",
        file="semverkit/version.py",
        fixed="            return -1 if x_num else 1\n",
        buggy="            return 1 if x_num else -1\n",
        test_file="tests/test_version.py",
        tests='''

def test_prerelease_numeric_identifier_sorts_before_alphanumeric():
    assert Version.parse("1.0.0-alpha.1") < Version.parse("1.0.0-alpha.beta")
    assert Version.parse("1.0.0-1") < Version.parse("1.0.0-alpha")


def test_semver_spec_precedence_example():
    chain = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
             "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"]
    parsed = [Version.parse(t) for t in chain]
    assert sorted(reversed(parsed)) == parsed
''',
        problem_statement="""\
Pre-release ordering disagrees with semver.org for mixed identifiers

I sort our release tags with `sorted(Version.parse(t) for t in tags)` and the order of our
nightly pre-releases came out wrong:

```python
>>> from semverkit import Version
>>> Version.parse("1.0.0-alpha.1") < Version.parse("1.0.0-alpha.beta")
False
```

semver.org, section 11, gives this exact chain as an example:
`1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-alpha.beta < 1.0.0-beta < ...` and says numeric
identifiers always have lower precedence than alphanumeric identifiers. semverkit puts
`alpha.beta` before `alpha.1`, so our "latest nightly" picker chose an older build.
""",
        created_at="2024-02-03T10:15:00Z",
    ),
    Bug(
        instance_id="semverkit-2",
        lib="semverkit",
        file="semverkit/ranges.py",
        fixed="    if major > 0 or minor is None:\n",
        buggy="    if major >= 0 or minor is None:\n",
        test_file="tests/test_ranges.py",
        tests='''

def test_caret_zero_major_locks_minor():
    r = Range("^0.2.3")
    assert r.contains("0.2.9")
    assert not r.contains("0.3.0")
    assert str(r) == ">=0.2.3 <0.3.0"


def test_caret_zero_zero_locks_patch():
    assert not Range("^0.0.3").contains("0.0.4")
''',
        problem_statement="""\
`^0.2.3` lets in 0.3.0 (breaking change on a 0.x dependency)

Our lockfile tool uses semverkit to pick upgrades. A dependency pinned as `^0.2.3` was upgraded
to 0.3.0, which has breaking API changes, and our build broke.

```python
>>> from semverkit import Range
>>> Range("^0.2.3").contains("0.3.0")
True
>>> str(Range("^0.2.3"))
'>=0.2.3 <1.0.0'
```

I expected `False` and `>=0.2.3 <0.3.0`: for a 0.x version the caret only allows patch
updates (npm documents `^0.2.3` as `>=0.2.3 <0.3.0` and `^0.0.3` as `>=0.0.3 <0.0.4`).
`^1.2.3` works as expected.
""",
        created_at="2024-02-11T08:40:00Z",
    ),
    Bug(
        instance_id="semverkit-3",
        lib="semverkit",
        file="semverkit/version.py",
        fixed='''        if self.prerelease:
            return Version(self.major, self.minor, self.patch)
        return Version(self.major, self.minor, self.patch + 1)
''',
        buggy='''        return Version(self.major, self.minor, self.patch + 1)
''',
        test_file="tests/test_version.py",
        tests='''

def test_bump_patch_of_prerelease_finalizes_it():
    assert str(Version.parse("1.2.3-rc.1").bump_patch()) == "1.2.3"
    assert str(Version.parse("2.0.0-beta").bump_patch()) == "2.0.0"
''',
        problem_statement="""\
bump_patch() on a release candidate skips the release

Our release script calls `bump_patch()` to turn the current release candidate into the final
release:

```python
>>> Version.parse("1.2.3-rc.1").bump_patch()
Version('1.2.4')
```

I expected `Version('1.2.3')` -- the docstring even says "1.2.3-rc.1 bumps to 1.2.3 (the
release it precedes)", and that is what `npm version patch` does. Instead we published 1.2.4
and 1.2.3 was never released.
""",
        created_at="2024-03-01T16:05:00Z",
    ),
    Bug(
        instance_id="semverkit-4",
        lib="semverkit",
        file="semverkit/ranges.py",
        fixed='''    elif hi_patch is None:
        out.append(Comparator("<", Version(hi_major, hi_minor + 1, 0)))
''',
        buggy='''    elif hi_patch is None:
        out.append(Comparator("<=", Version(hi_major, hi_minor, 0)))
''',
        test_file="tests/test_ranges.py",
        tests='''

def test_hyphen_range_partial_upper_includes_whole_minor():
    r = Range("1.0 - 2.3")
    assert r.contains("2.3.5")
    assert not r.contains("2.4.0")


def test_hyphen_range_major_only_upper():
    assert Range("1 - 2").contains("2.9.1")
''',
        problem_statement="""\
Hyphen range with a partial upper bound excludes its own patch releases

```python
>>> from semverkit import Range
>>> Range("1.0 - 2.3").contains("2.3.5")
False
```

With npm semantics, `1.0 - 2.3` means `>=1.0.0 <2.4.0` (a partial version on the right of a
hyphen range accepts everything that starts with it), so 2.3.5 should match. Right now only
exactly 2.3.0 matches; we noticed because our compatibility matrix `"1.0 - 2.3"` rejected a
2.3.x hotfix. Full versions on both sides (`1.2.3 - 2.3.4`) behave correctly.
""",
        created_at="2024-03-14T12:30:00Z",
    ),
    Bug(
        instance_id="semverkit-5",
        lib="semverkit",
        file="semverkit/version.py",
        fixed="    build: tuple[str, ...] = field(default=(), compare=False)\n",
        buggy="    build: tuple[str, ...] = ()\n",
        test_file="tests/test_version.py",
        tests='''

def test_build_metadata_ignored_for_equality():
    assert Version.parse("1.0.0+build.1") == Version.parse("1.0.0+build.2")
    assert Version.parse("1.0.0+abc") == Version(1, 0, 0)


def test_build_metadata_ignored_for_hash():
    assert len({Version.parse("1.0.0+a"), Version.parse("1.0.0+b")}) == 1
''',
        problem_statement="""\
Versions differing only in build metadata compare unequal

```python
>>> Version.parse("1.0.0+build.1") == Version.parse("1.0.0+build.2")
False
>>> Version.parse("1.0.0+build.1") < Version.parse("1.0.0+build.2")
False
```

So the two are neither equal nor ordered, and deduplicating a set of versions coming from
CI (which appends `+<sha>`) keeps every one of them. semver.org says build metadata MUST be
ignored when determining precedence, and the class docstring says it is ignored for ordering
and equality. I expected `True` for the equality and one element in the set.
""",
        created_at="2024-04-02T09:00:00Z",
    ),
]
