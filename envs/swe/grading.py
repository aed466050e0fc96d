"""Grading SWE tasks from test logs, with swebench's parsers and report logic.

A log is either a SWE-bench / SWE-smith harness log (only the part between its
`>>>>> Start Test Output` and `>>>>> End Test Output` markers is parsed) or a bare
`pytest -rA` report. The parser is the instance's own `log_parser` (SWE-bench 5.x
datasets name one), else swebench's parser for a repository it knows, else a
`pytest -rA` short-summary parser. The decision is swebench's: every FAIL_TO_PASS
test must pass (a missing or skipped one does not), every PASS_TO_PASS test must
pass or skip. A test that pytest's subtests report as `SUBFAILED` counts as failed
even when a `PASSED` line for it appears too (old pytest-subtests prints both).
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

_BAD_CODES = (APPLY_PATCH_FAIL, RESET_FAILED, TESTS_ERROR, TESTS_TIMEOUT)
_PYTEST_STATUSES = ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")
_SUMMARY_RE = re.compile(rf"^({'|'.join(_PYTEST_STATUSES)})\s+(\S.*?)(?:\s+-\s.*)?$")
_SUBFAILED_RE = re.compile(r"^SUBFAIL(?:ED)?\b(.*)$")

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
    error: str | None = None
    """Why the log could not be graded (patch did not apply, tests timed out, ...), else None."""
    tampering: list[str] = field(default_factory=list)
    """Why the run cannot be trusted (the env's guard and static check); non-empty = not resolved."""
    excluded: dict[str, str] = field(default_factory=dict)
    """Files left out of the graded patch, with the reason (see `protect.py`)."""

    @property
    def tests(self) -> dict[str, str]:
        """Status of every graded test (FAIL_TO_PASS then PASS_TO_PASS)."""
        return {**self.fail_to_pass, **self.pass_to_pass}

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolved": self.resolved,
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
    """Test statuses from pytest's `-rA` short summary (`PASSED tests/x.py::test_y`, ...)."""
    status_map: dict[str, str] = {}
    for line in log.splitlines():
        m = _SUMMARY_RE.match(line.rstrip())
        if m is None:
            continue
        status, name = m.group(1), m.group(2).strip()
        if status == "SKIPPED" and name.startswith("["):
            continue  # "SKIPPED [1] path:line: reason" names no test
        status_map[name] = status
    return status_map


def subfailed_tests(log: str) -> set[str]:
    """Tests with a failed subtest (`SUBFAILED[msg] (k=v) tests/x.py::test_y - ...`)."""
    failed: set[str] = set()
    for line in log.splitlines():
        m = _SUBFAILED_RE.match(line.strip())
        if m is None:
            continue
        head = m.group(1).split(" - ", 1)[0]
        ids = [tok for tok in head.split() if "::" in tok]
        if ids:
            failed.add(ids[-1])
    return failed


def pick_parser(instance: dict[str, Any]) -> Parser:
    """The instance's `log_parser`, else swebench's parser for its repo, else the -rA parser."""
    name = instance.get("log_parser")
    if isinstance(name, str) and name in PARSER_REGISTRY:
        return PARSER_REGISTRY[name]
    repo = instance.get("repo")
    if isinstance(repo, str) and repo in MAP_REPO_TO_PARSER_PY:
        return MAP_REPO_TO_PARSER_PY[repo]
    return lambda log, _spec: parse_pytest_report(log)


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


def parse_log(instance: dict[str, Any], log_text: str) -> tuple[dict[str, str], str | None]:
    """The status map of a log, and an error when the log shows the run itself failed."""
    for code in _BAD_CODES:
        if code in log_text:
            return {}, f"the log reports {code.lstrip('> ')!r}"
    body = log_text
    if START_TEST_OUTPUT in log_text:
        if END_TEST_OUTPUT not in log_text:
            return (
                {},
                f"the log has {START_TEST_OUTPUT!r} but no {END_TEST_OUTPUT!r}: the run was cut short",
            )
        body = log_text.split(START_TEST_OUTPUT, 1)[1].split(END_TEST_OUTPUT, 1)[0]
    f2p, p2p = tests_of(instance, "FAIL_TO_PASS"), tests_of(instance, "PASS_TO_PASS")
    status_map = dict(pick_parser(instance)(body, _test_spec(instance, f2p, p2p)))
    for name in subfailed_tests(body):
        status_map[name] = TestStatus.FAILED.value
    # As swebench does: a non-zero test exit with no failure in the report means the
    # report does not describe the run (e.g. a patch printing its own PASSED lines).
    exit_code = parse_test_exit_code(log_text)
    failing = (TestStatus.FAILED.value, TestStatus.ERROR.value)
    if (
        exit_code not in (None, 0)
        and status_map
        and not any(s in failing for s in status_map.values())
    ):
        return {}, f"the tests exited with {exit_code} but the report shows no failure"
    return status_map, None


def grade_status_map(
    instance: dict[str, Any], status_map: dict[str, str], error: str | None = None
) -> GradeResult:
    """Grade a parsed status map with swebench's report logic."""
    f2p, p2p = tests_of(instance, "FAIL_TO_PASS"), tests_of(instance, "PASS_TO_PASS")
    result = GradeResult(
        resolved=False,
        fail_to_pass={t: status_map.get(t, MISSING) for t in f2p},
        pass_to_pass={t: status_map.get(t, MISSING) for t in p2p},
        status_map=status_map,
        error=error,
    )
    if error is not None:
        return result
    if not f2p and not p2p:
        result.error = "the instance lists no FAIL_TO_PASS or PASS_TO_PASS tests; nothing to grade"
        return result
    eval_type = EvalType(instance.get("eval_type") or EvalType.PASS_AND_FAIL.value)
    report = get_eval_tests_report(
        status_map, {FAIL_TO_PASS: f2p, PASS_TO_PASS: p2p}, eval_type=eval_type
    )
    result.resolved = get_resolution_status(report) == ResolvedStatus.FULL.value
    return result


def grade_log(instance: dict[str, Any], log_text: str) -> GradeResult:
    """Grade a test log produced elsewhere (a SWE-bench/SWE-smith harness log or `pytest -rA`).

    `instance` needs FAIL_TO_PASS and PASS_TO_PASS (lists or JSON strings); `repo` and
    `log_parser` pick swebench's parser where it knows them.
    """
    status_map, error = parse_log(instance, log_text)
    return grade_status_map(instance, status_map, error)
