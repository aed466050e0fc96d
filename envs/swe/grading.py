r"""Grading SWE tasks from test logs, as each project's harness grades them.

A log is a harness log (only the part between `>>>>> Start Test Output` and
`>>>>> End Test Output` is parsed) or a bare test report. Two choices make a verdict:

**The parser**: the instance's `log_parser` (SWE-bench 5.x datasets name one), else the
harness's parser for the repository, else one picked from the log's format, detected:
pytest's `-rA` short summary (`PASSED tests/x.py::test_y`), pytest's verbose lines
(`tests/x.py::test_y PASSED`, what SWE-smith runs), Django's runner (`test_y (app.T) ... ok`)
or sympy's (`test_y ok`).

**The rules** (`harness`), which differ between projects, so a verdict here matches the
one users' numbers come from:
- `swebench` (5.x): swebench's own report functions. A skipped FAIL_TO_PASS test fails;
  a skipped PASS_TO_PASS test is kept. Anti-spoof: a log whose recorded test exit code is
  non-zero while it reports no failure is not graded (`>>>>> Test Exit Code: N`). A log
  whose slice parses to nothing is parsed whole.
- `swebench4` (4.x and earlier, and SWE-Gym's fork of it): a skipped FAIL_TO_PASS test
  counts neither as passed nor failed, so a run where every FAIL_TO_PASS test skips
  resolves; no exit-code check.
- `swesmith`: SWE-smith's rules. A test the log does not mention counts as passed (it
  runs subsets of suites); the test-output slice is cut at the `+ : '>>>>> ...'` trace
  lines; its verbose parser reads `^(\S+)\s+STATUS`, so a parametrized id with a space is
  never parsed (and so counts as passed when it is graded). Its `report.json` never sets
  `patch_successfully_applied`, so `false` there beside `resolved: true` is normal.
- `mentorgym`: the env's own grading (default for instances of no known project): 5.x's
  rules with a parser that keeps ids with spaces, strips ANSI colour, counts a
  `SUBFAILED` subtest as a failure, and treats a summary with no final
  `=== N passed ... ===` line as a truncated log.

`pick_harness` chooses from the instance: its `harness` key, else SWE-smith (an
`image_name` and no `test_patch`), SWE-Gym (its repositories or `xingyaoww/` images),
SWE-bench (a `log_parser` or a repository swebench knows), else `mentorgym`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from swebench.harness.constants import (
    APPLY_PATCH_FAIL,
    END_TEST_OUTPUT,
    FAIL_TO_PASS,
    PASS_TO_PASS,
    RESET_FAILED,
    START_TEST_OUTPUT,
    TESTS_ERROR,
    TESTS_TIMEOUT,
    EvalType,
    ResolvedStatus,
    TestStatus,
)
from swebench.harness.grading import (
    get_eval_tests_report,
    get_resolution_status,
    parse_test_exit_code,
)
from swebench.harness.log_parsers import PARSER_REGISTRY
from swebench.harness.log_parsers.python import MAP_REPO_TO_PARSER_PY
from swebench.types import TestSpec

MISSING = "MISSING"
"""Status reported for a graded test that the log does not mention."""

HARNESSES = ("swebench", "swebench4", "swesmith", "swegym", "mentorgym")
SWE_GYM_REPOS = frozenset(
    {
        "getmoto/moto", "python/mypy", "pandas-dev/pandas", "dask/dask", "conan-io/conan",
        "iterative/dvc", "pydantic/pydantic", "bokeh/bokeh", "modin-project/modin",
        "facebookresearch/hydra", "Project-MONAI/MONAI",
    }
)  # fmt: skip
"""The repositories of SWE-Gym's instances (none is in SWE-bench)."""

_BAD_CODES = (APPLY_PATCH_FAIL, RESET_FAILED, TESTS_ERROR, TESTS_TIMEOUT)
_PYTEST_STATUSES = ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")
_SUMMARY_RE = re.compile(rf"^({'|'.join(_PYTEST_STATUSES)})\s+(\S.*?)(?:\s+-\s.*)?$")
_SUBFAILED_RE = re.compile(r"^SUBFAIL(?:ED)?\b(.*)$")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SESSION_END_RE = re.compile(
    r"^=+ .*\b(passed|failed|error|errors|skipped|deselected|no tests ran)\b.* in [\d.]+s.*=+$",
    re.M,
)
# what the detector counts, one pattern per format
_FORMATS: dict[str, re.Pattern[str]] = {
    "pytest_summary": re.compile(rf"^({'|'.join(_PYTEST_STATUSES)}) \S+", re.M),
    "pytest_verbose": re.compile(rf"^\S+::\S*\s+({'|'.join(_PYTEST_STATUSES)})\b", re.M),
    "django": re.compile(r"^\w+ \([\w.]+\)(?: \S.*)? \.\.\. (ok|FAIL|ERROR|skipped)", re.M),
    "sympy": re.compile(r"^test_\w+ (ok|F|E|f|s|Slow w/o f)\s*$", re.M),
}

Parser = Callable[[str, TestSpec], dict[str, str]]


@dataclass
class GradeResult:
    """The outcome of grading one task instance."""

    resolved: bool
    """True exactly when every FAIL_TO_PASS and PASS_TO_PASS test passes."""
    fail_to_pass: dict[str, str] = field(default_factory=dict)
    """Status of each FAIL_TO_PASS test: PASSED, FAILED, ERROR, SKIPPED, XFAIL, ... or MISSING."""
    pass_to_pass: dict[str, str] = field(default_factory=dict)
    """Status of each PASS_TO_PASS test, as for `fail_to_pass`."""
    status_map: dict[str, str] = field(default_factory=dict)
    """Every test the log reports, with its status."""
    harness: str = "mentorgym"
    """Whose rules graded it (see `HARNESSES`)."""
    error: str | None = None
    """Why the log could not be graded (patch did not apply, tests timed out, ...), else None."""
    tampering: list[str] = field(default_factory=list)
    """Why the run cannot be trusted (the env's guard and static check); non-empty = not resolved."""
    excluded: dict[str, str] = field(default_factory=dict)
    """Files left out of the graded patch, with the reason (see `protect.py`)."""
    cached: bool = False
    """True when the env reused the grade of an identical patch instead of running the tests."""

    @property
    def tests(self) -> dict[str, str]:
        """Status of every graded test (FAIL_TO_PASS then PASS_TO_PASS)."""
        return {**self.fail_to_pass, **self.pass_to_pass}

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolved": self.resolved,
            "harness": self.harness,
            "fail_to_pass": self.fail_to_pass,
            "pass_to_pass": self.pass_to_pass,
            "error": self.error,
            "tampering": self.tampering,
            "excluded": self.excluded,
        }

    def integrity_info(self) -> dict[str, Any]:
        """The env's `info` keys for this grade: grade_error, tampering, excluded (when set)."""
        info: dict[str, Any] = {}
        if self.error:
            info["grade_error"] = self.error
        if self.tampering:
            info["tampering"] = self.tampering
        if self.excluded:
            info["excluded"] = self.excluded
        if self.cached:
            info["grade_cached"] = True
        return info


def tests_of(instance: dict[str, Any], key: str) -> list[str]:
    """FAIL_TO_PASS / PASS_TO_PASS as a list; SWE-bench stores them as JSON strings."""
    value = instance.get(key) or []
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"{key} of {instance.get('instance_id')!r} must be a list of test ids")
    return value


def parse_pytest_report(log: str) -> dict[str, str]:
    """Test statuses from pytest's `-rA` short summary (`PASSED tests/x.py::test_y`, ...).

    ANSI colour is stripped; ids keep their spaces (`test_p[a b]`); a FAILED line's
    ` - message` is dropped; `SKIPPED [1] path:line: reason` names no test and is skipped.
    """
    status_map: dict[str, str] = {}
    for line in _ANSI_RE.sub("", log).splitlines():
        m = _SUMMARY_RE.match(line.rstrip())
        if m is None:
            continue
        status, name = m.group(1), m.group(2).strip()
        if status == "SKIPPED" and name.startswith("["):
            continue
        status_map[name] = status
    for name in subfailed_tests(log):
        status_map[name] = TestStatus.FAILED.value
    return status_map


def parse_pytest_verbose(log: str) -> dict[str, str]:
    """Statuses from pytest's verbose lines (`tests/x.py::test_y PASSED [ 50%]`), as SWE-smith reads them.

    SWE-smith's rule: the first whitespace-free token, whitespace, then a status. A node id
    with a space in it is therefore not read (that is the harness's behaviour, kept here).
    """
    status_map: dict[str, str] = {}
    for line in log.split("\n"):
        for status in TestStatus:
            m = re.match(rf"^(\S+)(\s+){status.value}", line)
            if m:
                status_map[m.group(1)] = status.value
    return status_map


def subfailed_tests(log: str) -> set[str]:
    """Tests with a failed subtest (`SUBFAILED[msg] (k=v) tests/x.py::test_y - ...`)."""
    failed: set[str] = set()
    for line in _ANSI_RE.sub("", log).splitlines():
        m = _SUBFAILED_RE.match(line.strip())
        if m is None:
            continue
        head = m.group(1).split(" - ", 1)[0]
        ids = [tok for tok in head.split() if "::" in tok]
        if ids:
            failed.add(ids[-1])
    return failed


def detect_format(log: str) -> str | None:
    """The test-report format most of the log's lines are in, or None when none matches."""
    plain = _ANSI_RE.sub("", log)
    counts = {name: len(p.findall(plain)) for name, p in _FORMATS.items()}
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] else None


def pick_harness(instance: dict[str, Any]) -> str:
    """Whose rules grade this instance (see the module docstring)."""
    explicit = instance.get("harness")
    if explicit:
        if explicit not in HARNESSES:
            raise ValueError(f"harness {explicit!r} is not one of {HARNESSES}")
        return str(explicit)
    if instance.get("image_name") and not instance.get("test_patch"):
        return "swesmith"
    image = str(instance.get("image") or instance.get("image_name") or "")
    if instance.get("repo") in SWE_GYM_REPOS or image.startswith("xingyaoww/"):
        return "swegym"
    if instance.get("log_parser") or instance.get("repo") in MAP_REPO_TO_PARSER_PY:
        return "swebench"
    return "mentorgym"


def pick_parser(
    instance: dict[str, Any], log: str = "", harness: str | None = None
) -> tuple[str, Parser]:
    """(name, parser): the instance's `log_parser`, else the repo's, else the detected format's."""
    harness = harness or pick_harness(instance)
    name = instance.get("log_parser")
    if isinstance(name, str) and name in PARSER_REGISTRY:
        return name, PARSER_REGISTRY[name]
    repo = instance.get("repo")
    if harness != "swesmith" and isinstance(repo, str) and repo in MAP_REPO_TO_PARSER_PY:
        return MAP_REPO_TO_PARSER_PY[repo].__name__, MAP_REPO_TO_PARSER_PY[repo]
    fmt = detect_format(log) or ("pytest_verbose" if harness == "swesmith" else "pytest_summary")
    if fmt == "pytest_verbose":
        return "parse_log_pytest_verbose", lambda text, _spec: parse_pytest_verbose(text)
    if fmt == "django":
        return "parse_log_django", PARSER_REGISTRY["parse_log_django"]
    if fmt == "sympy":
        return "parse_log_sympy", PARSER_REGISTRY["parse_log_sympy"]
    if harness == "mentorgym":
        return "parse_pytest_report", lambda text, _spec: parse_pytest_report(text)
    return "parse_log_pytest", PARSER_REGISTRY["parse_log_pytest"]


def _test_spec(instance: dict[str, Any], f2p: list[str], p2p: list[str]) -> TestSpec:
    return TestSpec(
        instance_id=str(instance.get("instance_id", "")),
        image=str(instance.get("image", "")),
        eval_script_list=[],
        repo=str(instance.get("repo", "")),
        version=str(instance.get("version", "")),
        FAIL_TO_PASS=f2p,
        PASS_TO_PASS=p2p,
        log_parser=str(instance.get("log_parser", "")),
        eval_type=str(instance.get("eval_type", EvalType.PASS_AND_FAIL.value)),
    )


def _test_output(log_text: str, harness: str) -> tuple[str | None, str | None]:
    """(the part of the log to parse, None) or (None, why the log cannot be graded)."""
    if harness == "swesmith":
        for code in (APPLY_PATCH_FAIL, TESTS_TIMEOUT):
            if code in log_text:
                return None, f"the log reports {code.lstrip('> ')!r}"
        start, end = f"+ : '{START_TEST_OUTPUT}'", f"+ : '{END_TEST_OUTPUT}'"
        if START_TEST_OUTPUT not in log_text or END_TEST_OUTPUT not in log_text:
            return None, "the log lacks the test-output markers: the run was cut short"
        a, b = log_text.find(start), log_text.find(end)
        return log_text[a:b][len(start) :], None
    for code in _BAD_CODES:
        if code in log_text:
            return None, f"the log reports {code.lstrip('> ')!r}"
    if START_TEST_OUTPUT not in log_text:
        return log_text, None  # a bare test report
    if END_TEST_OUTPUT not in log_text:
        return (
            None,
            f"the log has {START_TEST_OUTPUT!r} but no {END_TEST_OUTPUT!r}: the run was cut short",
        )
    return log_text.split(START_TEST_OUTPUT, 1)[1].split(END_TEST_OUTPUT, 1)[0], None


def parse_log(
    instance: dict[str, Any], log_text: str, harness: str | None = None
) -> tuple[dict[str, str], str | None]:
    """The status map of a log, and an error when the log shows the run itself failed."""
    harness = harness or pick_harness(instance)
    body, error = _test_output(log_text, harness)
    if body is None:
        return {}, error
    f2p, p2p = tests_of(instance, "FAIL_TO_PASS"), tests_of(instance, "PASS_TO_PASS")
    spec = _test_spec(instance, f2p, p2p)
    _, parser = pick_parser(instance, body, harness)
    status_map = dict(parser(body, spec))
    if harness == "swesmith":
        return status_map, None
    if harness == "mentorgym":
        if (
            "short test summary info" in body
            and not _SESSION_END_RE.search(_ANSI_RE.sub("", body))
            and detect_format(body) == "pytest_summary"
        ):
            return (
                {},
                "the pytest summary has no closing `=== N passed ... ===` line: the log is truncated",
            )
    if harness in ("swebench", "mentorgym") and not status_map and body is not log_text:
        # swebench 5.x: some runners print results outside the markers; parse the whole log
        status_map = dict(parser(log_text, spec))
    if harness in ("swebench", "mentorgym"):
        # 5.x's anti-spoof check: a non-zero test exit with no failure in the report means
        # the report does not describe the run (e.g. a patch printing its own PASSED lines).
        exit_code = parse_test_exit_code(log_text)
        failing = (TestStatus.FAILED.value, TestStatus.ERROR.value)
        if (
            exit_code not in (None, 0)
            and status_map
            and not any(s in failing for s in status_map.values())
        ):
            return {}, f"the tests exited with {exit_code} but the report shows no failure"
    return status_map, None


def tests_report(
    status_map: dict[str, str], f2p: list[str], p2p: list[str], harness: str, eval_type: EvalType
) -> dict[str, dict[str, list[str]]]:
    """The harness's per-test report: {FAIL_TO_PASS: {success, failure}, PASS_TO_PASS: ...}."""
    if harness in ("swebench", "mentorgym"):
        return get_eval_tests_report(
            status_map, {FAIL_TO_PASS: f2p, PASS_TO_PASS: p2p}, eval_type=eval_type
        )
    passing = (TestStatus.PASSED.value, TestStatus.XFAIL.value)
    failing = (TestStatus.FAILED.value, TestStatus.ERROR.value)

    def split(tests: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"success": [], "failure": []}
        for t in tests:
            if harness == "swesmith":
                # a test the log does not mention is taken as passed; SKIPPED counts for neither
                if t not in status_map or status_map[t] in passing:
                    out["success"].append(t)
                elif status_map[t] in failing:
                    out["failure"].append(t)
            elif t in status_map and status_map[t] in passing:  # swebench4 / swegym
                out["success"].append(t)
            elif t not in status_map or status_map[t] in failing:
                out["failure"].append(t)
            # a SKIPPED test lands in neither list: 4.x's rule
        return out

    return {FAIL_TO_PASS: split(f2p), PASS_TO_PASS: split(p2p)}


def grade_status_map(
    instance: dict[str, Any],
    status_map: dict[str, str],
    error: str | None = None,
    harness: str | None = None,
) -> GradeResult:
    """Grade a parsed status map with the harness's report logic."""
    harness = harness or pick_harness(instance)
    f2p, p2p = tests_of(instance, "FAIL_TO_PASS"), tests_of(instance, "PASS_TO_PASS")
    result = GradeResult(
        resolved=False,
        fail_to_pass={t: status_map.get(t, MISSING) for t in f2p},
        pass_to_pass={t: status_map.get(t, MISSING) for t in p2p},
        status_map=status_map,
        error=error,
        harness=harness,
    )
    if error is not None:
        return result
    if not f2p and not p2p:
        result.error = "the instance lists no FAIL_TO_PASS or PASS_TO_PASS tests; nothing to grade"
        return result
    eval_type = EvalType(instance.get("eval_type") or EvalType.PASS_AND_FAIL.value)
    report = tests_report(status_map, f2p, p2p, harness, eval_type)
    result.resolved = get_resolution_status(report) == ResolvedStatus.FULL.value
    return result


def grade_log(instance: dict[str, Any], log_text: str, harness: str | None = None) -> GradeResult:
    """Grade a test log as `harness` would (default: `pick_harness(instance)`).

    `instance` needs FAIL_TO_PASS and PASS_TO_PASS (lists or JSON strings); `log_parser`,
    `repo` and the log's format pick the parser.
    """
    harness = harness or pick_harness(instance)
    if harness not in HARNESSES:
        raise ValueError(f"harness {harness!r} is not one of {HARNESSES}")
    status_map, error = parse_log(instance, log_text, harness)
    return grade_status_map(instance, status_map, error, harness)


def report_json_verdict(report: dict[str, Any], instance_id: str) -> bool:
    """`resolved` from a harness's report.json (SWE-bench's `{id: {...}}` or SWE-smith's flat dict).

    Only `resolved` is read: SWE-smith never sets `patch_successfully_applied`, so its
    reports say `false` there even for resolved instances.
    """
    entry = report.get(instance_id, report)
    if not isinstance(entry, dict) or "resolved" not in entry:
        raise ValueError(f"the report has no `resolved` for {instance_id!r}")
    return bool(entry["resolved"])


def grade_table(instance_id: str, result: GradeResult) -> str:
    """The verdict and a per-test table, for the command line."""
    verdict = "RESOLVED" if result.resolved else "NOT RESOLVED"
    lines = [f"{instance_id}: {verdict} (rules: {result.harness})"]
    if result.error:
        lines.append(f"  not graded: {result.error}")
    for reason in result.tampering:
        lines.append(f"  tampering: {reason}")
    rows = [("FAIL_TO_PASS", t, s) for t, s in result.fail_to_pass.items()]
    rows += [("PASS_TO_PASS", t, s) for t, s in result.pass_to_pass.items()]
    width = max((len(t) for _, t, _ in rows), default=10)
    for kind, test, status in rows:
        lines.append(f"  {kind:<13} {status:<8} {test:<{width}}")
    return "\n".join(lines)
