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
        tests="""

def test_prerelease_numeric_identifier_sorts_before_alphanumeric():
    assert Version.parse("1.0.0-alpha.1") < Version.parse("1.0.0-alpha.beta")
    assert Version.parse("1.0.0-1") < Version.parse("1.0.0-alpha")


def test_semver_spec_precedence_example():
    chain = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
             "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"]
    parsed = [Version.parse(t) for t in chain]
    assert sorted(reversed(parsed)) == parsed
""",
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
        tests="""

def test_caret_zero_major_locks_minor():
    r = Range("^0.2.3")
    assert r.contains("0.2.9")
    assert not r.contains("0.3.0")
    assert str(r) == ">=0.2.3 <0.3.0"


def test_caret_zero_zero_locks_patch():
    assert not Range("^0.0.3").contains("0.0.4")
""",
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
        fixed="""        if self.prerelease:
            return Version(self.major, self.minor, self.patch)
        return Version(self.major, self.minor, self.patch + 1)
""",
        buggy="""        return Version(self.major, self.minor, self.patch + 1)
""",
        test_file="tests/test_version.py",
        tests="""

def test_bump_patch_of_prerelease_finalizes_it():
    assert str(Version.parse("1.2.3-rc.1").bump_patch()) == "1.2.3"
    assert str(Version.parse("2.0.0-beta").bump_patch()) == "2.0.0"
""",
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
        fixed="""    elif hi_patch is None:
        out.append(Comparator("<", Version(hi_major, hi_minor + 1, 0)))
""",
        buggy="""    elif hi_patch is None:
        out.append(Comparator("<=", Version(hi_major, hi_minor, 0)))
""",
        test_file="tests/test_ranges.py",
        tests="""

def test_hyphen_range_partial_upper_includes_whole_minor():
    r = Range("1.0 - 2.3")
    assert r.contains("2.3.5")
    assert not r.contains("2.4.0")


def test_hyphen_range_major_only_upper():
    assert Range("1 - 2").contains("2.9.1")
""",
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
        tests="""

def test_build_metadata_ignored_for_equality():
    assert Version.parse("1.0.0+build.1") == Version.parse("1.0.0+build.2")
    assert Version.parse("1.0.0+abc") == Version(1, 0, 0)


def test_build_metadata_ignored_for_hash():
    assert len({Version.parse("1.0.0+a"), Version.parse("1.0.0+b")}) == 1
""",
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
    Bug(
        instance_id="intervalkit-1",
        lib="intervalkit",
        file="intervalkit/interval.py",
        fixed="            lo, lo_closed = self.lo, self.lo_closed and other.lo_closed\n",
        buggy="            lo, lo_closed = self.lo, self.lo_closed\n",
        test_file="tests/test_interval.py",
        tests="""

def test_intersection_same_lower_bound_open_wins():
    assert Interval(0, 5) & Interval(0, 5, False, True) == Interval(0, 5, False, True)
    assert 0 not in Interval(0, 5) & Interval(0, 9, False, True)
""",
        problem_statement="""\
Intersection of [0, 5] and (0, 5] contains 0

We use intervalkit to clip sensor windows. Intersecting a closed window with a half-open one
that starts at the same point keeps the point that the half-open one excludes:

```python
>>> from intervalkit import Interval
>>> str(Interval(0, 5) & Interval(0, 5, False, True))
'[0, 5]'
>>> 0 in Interval(0, 5) & Interval(0, 9, False, True)
True
```

I expected `'(0, 5]'` and `False`: 0 is not in `(0, 9]`, so it cannot be in the intersection.
The same thing on the upper end (`[0, 5) & [0, 5]`) correctly gives `[0, 5)`.
""",
        created_at="2024-05-06T14:20:00Z",
    ),
    Bug(
        instance_id="intervalkit-2",
        lib="intervalkit",
        file="intervalkit/intervalset.py",
        fixed="        span = self._items[0].hull(self._items[-1])\n",
        buggy="        span = self._items[0]\n",
        test_file="tests/test_intervalset.py",
        tests="""

def test_difference_of_multi_interval_set():
    a = IntervalSet([Interval(0, 2), Interval(5, 8)])
    b = IntervalSet([Interval(1, 6)])
    assert list(a - b) == [Interval(0, 1, True, False), Interval(6, 8, False, True)]


def test_difference_keeps_untouched_intervals():
    a = IntervalSet([Interval(0, 1), Interval(10, 11), Interval(20, 21)])
    assert (a - IntervalSet([Interval(10, 11)])) == IntervalSet([Interval(0, 1), Interval(20, 21)])
""",
        problem_statement="""\
IntervalSet difference drops everything after the first interval

Subtracting from a set with more than one interval loses data:

```python
>>> from intervalkit import Interval, IntervalSet
>>> a = IntervalSet([Interval(0, 1), Interval(10, 11), Interval(20, 21)])
>>> a - IntervalSet([Interval(10, 11)])
IntervalSet([[0, 1]])
```

Expected `IntervalSet([[0, 1], [20, 21]])` -- `[20, 21]` does not overlap what I subtracted at
all. Subtracting from a set made of a single interval works fine, which is why our calendar
code only broke for people with more than one busy block in a day.
""",
        created_at="2024-05-19T09:45:00Z",
    ),
    Bug(
        instance_id="intervalkit-3",
        lib="intervalkit",
        file="intervalkit/interval.py",
        fixed='    return float(text) if any(c in text for c in ".eE") else int(text)\n',
        buggy='    return float(text) if "." in text else int(text)\n',
        test_file="tests/test_interval.py",
        tests="""

def test_parse_scientific_notation():
    assert parse_interval("[1e-3, 2E3)") == Interval(0.001, 2000.0, True, False)
""",
        problem_statement="""\
parse_interval rejects bounds in scientific notation

Our config has tolerance windows written the way numpy prints them:

```python
>>> from intervalkit import parse_interval
>>> parse_interval("[1e-3, 2E3)")
Traceback (most recent call last):
  ...
ValueError: interval bounds must be numbers: '[1e-3, 2E3)'
```

`1e-3` and `2E3` are numbers (Python's `float()` accepts them), so I expected
`Interval(lo=0.001, hi=2000.0, lo_closed=True, hi_closed=False)`. `[2.5, 3]` and `(-inf, 0]`
parse fine.
""",
        created_at="2024-06-02T17:10:00Z",
    ),
    Bug(
        instance_id="intervalkit-4",
        lib="intervalkit",
        file="intervalkit/interval.py",
        fixed="            lo, lo_closed = self.lo, self.lo_closed or other.lo_closed\n",
        buggy="            lo, lo_closed = self.lo, self.lo_closed\n",
        test_file="tests/test_interval.py",
        tests="""

def test_hull_same_lower_bound_closed_wins():
    assert Interval(0, 2, False, True).hull(Interval(0, 1)) == Interval(0, 2)
    assert 0 in Interval(0, 2, False, True).hull(Interval(0, 1))
""",
        problem_statement="""\
Interval.hull loses a closed lower end when both start at the same point

```python
>>> from intervalkit import Interval
>>> str(Interval(0, 2, False, True).hull(Interval(0, 1)))
'(0, 2]'
```

The hull is documented as the smallest interval containing both, and `[0, 1]` contains 0, so
I expected `'[0, 2]'`. Swapping the operands gives the right answer, which makes our
bounding-box code depend on argument order.
""",
        created_at="2024-06-20T11:00:00Z",
    ),
    Bug(
        instance_id="dotenvkit-1",
        lib="dotenvkit",
        file="dotenvkit/expand.py",
        fixed='        if op == ":-" and not current:\n',
        buggy='        if op == ":-" and current is None:\n',
        test_file="tests/test_expand.py",
        tests="""

def test_colon_default_used_when_empty():
    assert expand("${PORT:-8080}", {"PORT": ""}) == "8080"
    assert parse("PORT=\\nADDR=:${PORT:-8080}") == {"PORT": "", "ADDR": ":8080"}


def test_plain_default_not_used_when_empty():
    assert expand("${PORT-8080}", {"PORT": ""}) == ""
""",
        problem_statement="""\
`${VAR:-default}` ignores the default when VAR is set but empty

Our .env template ships `PORT=` (empty, to be filled in per machine) and later
`ADDR=0.0.0.0:${PORT:-8080}`. With dotenvkit:

```python
>>> from dotenvkit import parse
>>> parse("PORT=\\nADDR=0.0.0.0:${PORT:-8080}")
{'PORT': '', 'ADDR': '0.0.0.0:'}
```

In sh (and per the docstring), `${VAR:-word}` uses `word` when VAR is unset *or empty*, so I
expected `'ADDR': '0.0.0.0:8080'`. Only the form without the colon, `${VAR-word}`, should keep
the empty value.
""",
        created_at="2024-07-08T08:30:00Z",
    ),
    Bug(
        instance_id="dotenvkit-2",
        lib="dotenvkit",
        file="dotenvkit/parser.py",
        fixed='_ESCAPES = {"n": "\\n", "t": "\\t", "r": "\\r", \'"\': \'"\', "\\\\": "\\\\", "$": "\\\\$"}\n',
        buggy='_ESCAPES = {"n": "\\n", "t": "\\t", "r": "\\r", \'"\': \'"\', "\\\\": "\\\\", "$": "$"}\n',
        test_file="tests/test_parser.py",
        tests="""

def test_escaped_dollar_in_double_quotes_is_literal():
    assert parse('PRICE="\\\\$5 per \\\\$UNIT"', env={"UNIT": "kg"}) == {"PRICE": "$5 per $UNIT"}
""",
        problem_statement="""\
Escaped `\\$` inside double quotes is still expanded

I need a literal dollar sign in a double-quoted value (it also has a `\\n`, so single quotes are
not an option):

```
GREETING="costs \\$5\\nper \\$UNIT"
```

```python
>>> parse('GREETING="costs \\\\$5\\\\nper \\\\$UNIT"', env={"UNIT": "kg"})
{'GREETING': 'costs \\nper kg'}
```

The `\\$5` vanished and `\\$UNIT` was expanded. Unquoted values handle `\\$` as a literal dollar
(as the expand() docstring says), so I expected `'costs $5\\nper $UNIT'`.
""",
        created_at="2024-07-21T19:05:00Z",
    ),
    Bug(
        instance_id="dotenvkit-3",
        lib="dotenvkit",
        file="dotenvkit/parser.py",
        fixed='    values = parse(Path(path).read_text(encoding="utf-8"), interpolate=interpolate, env=os.environ)\n',
        buggy='    values = parse(Path(path).read_text(encoding="utf-8"), interpolate=interpolate)\n',
        test_file="tests/test_parser.py",
        tests="""

def test_load_expands_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DOTENVKIT_HOME", "/srv/app")
    monkeypatch.delenv("DOTENVKIT_LOGS", raising=False)
    f = tmp_path / ".env"
    f.write_text("DOTENVKIT_LOGS=${DOTENVKIT_HOME}/logs\\n")
    assert load(f) == {"DOTENVKIT_LOGS": "/srv/app/logs"}
    assert os.environ["DOTENVKIT_LOGS"] == "/srv/app/logs"
    monkeypatch.delenv("DOTENVKIT_LOGS")
""",
        problem_statement="""\
load() does not expand variables from the process environment

Deployment sets `APP_HOME` in the environment and our .env says `LOG_DIR=${APP_HOME}/logs`.
After `dotenvkit.load(".env")`, `os.environ["LOG_DIR"]` is `/logs` -- the `${APP_HOME}` part
expanded to nothing. `parse(text, env=os.environ)` gives the right value (`/srv/app/logs`), so
I expected `load()`, whose job is to merge the file into the real environment, to expand from
that environment too. Variables defined earlier in the same file do expand.
""",
        created_at="2024-08-03T13:40:00Z",
    ),
    Bug(
        instance_id="dotenvkit-4",
        lib="dotenvkit",
        file="dotenvkit/parser.py",
        fixed='                raise DotenvError(f"unterminated {quote} quote in the value of {name}", start)\n',
        buggy='                raise DotenvError(f"unterminated {quote} quote in the value of {name}", lineno)\n',
        test_file="tests/test_parser.py",
        tests="""

def test_unterminated_multiline_quote_reports_opening_line():
    with pytest.raises(DotenvError) as e:
        parse('A=1\\nB="abc\\nC=2\\nD=3\\n')
    assert e.value.lineno == 2
    assert "line 2:" in str(e.value)
""",
        problem_statement="""\
Unterminated double quote is reported on the wrong line

A missing closing `"` in a 300-line .env file gave

```
dotenvkit.parser.DotenvError: line 300: unterminated " quote in the value of DB_PASSWORD
```

but DB_PASSWORD is on line 12; line 300 is just the end of the file. Small repro:

```python
>>> parse('A=1\\nB="abc\\nC=2\\nD=3\\n')
DotenvError: line 4: unterminated " quote in the value of B
```

I expected `line 2`, where the quote was opened (`e.lineno == 2`). With single quotes the line
number is right.
""",
        created_at="2024-08-15T10:25:00Z",
    ),
]
