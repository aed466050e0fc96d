"""Grading SWE logs: bare pytest -rA reports and SWE-bench harness logs, with swebench's rules."""

from __future__ import annotations

import json

from mentorgym.envs.swe import grade_log
from mentorgym.envs.swe.grading import MISSING, parse_pytest_report, subfailed_tests

INSTANCE = {
    "instance_id": "acme__lib-1",
    "repo": "acme/lib",
    "FAIL_TO_PASS": ["tests/test_a.py::test_fix", "tests/test_a.py::test_param[x y]"],
    "PASS_TO_PASS": ["tests/test_b.py::test_old"],
}

PYTEST_ALL_PASS = """\
============================= test session starts ==============================
collected 3 items

tests/test_a.py ..                                                       [ 66%]
tests/test_b.py .                                                        [100%]

==================================== PASSES ====================================
=========================== short test summary info ============================
PASSED tests/test_a.py::test_fix
PASSED tests/test_a.py::test_param[x y]
PASSED tests/test_b.py::test_old
============================== 3 passed in 0.02s ===============================
"""


def test_bare_pytest_report_all_pass_resolves():
    r = grade_log(INSTANCE, PYTEST_ALL_PASS)
    assert r.resolved
    assert r.error is None
    assert r.fail_to_pass == {
        "tests/test_a.py::test_fix": "PASSED",
        "tests/test_a.py::test_param[x y]": "PASSED",
    }
    assert r.pass_to_pass == {"tests/test_b.py::test_old": "PASSED"}


def test_failed_line_with_message_is_parsed_and_not_resolved():
    log = PYTEST_ALL_PASS.replace(
        "PASSED tests/test_a.py::test_fix",
        "FAILED tests/test_a.py::test_fix - AssertionError: 1 - 2 != 0",
    )
    r = grade_log(INSTANCE, log)
    assert not r.resolved
    assert r.fail_to_pass["tests/test_a.py::test_fix"] == "FAILED"


def test_missing_test_is_not_passing():
    log = PYTEST_ALL_PASS.replace("PASSED tests/test_b.py::test_old\n", "")
    r = grade_log(INSTANCE, log)
    assert not r.resolved
    assert r.pass_to_pass["tests/test_b.py::test_old"] == MISSING


def test_skipped_fail_to_pass_is_not_passing_but_skipped_pass_to_pass_is_kept():
    skip_f2p = PYTEST_ALL_PASS.replace(
        "PASSED tests/test_a.py::test_fix", "SKIPPED tests/test_a.py::test_fix"
    )
    assert not grade_log(INSTANCE, skip_f2p).resolved
    skip_p2p = PYTEST_ALL_PASS.replace(
        "PASSED tests/test_b.py::test_old", "SKIPPED tests/test_b.py::test_old"
    )
    assert grade_log(INSTANCE, skip_p2p).resolved


def test_pytest_skip_summary_names_no_test():
    log = PYTEST_ALL_PASS.replace(
        "PASSED tests/test_a.py::test_fix", "SKIPPED [1] tests/test_a.py:12: unconditional skip"
    )
    assert parse_pytest_report(log).get("[1]") is None
    r = grade_log(INSTANCE, log)
    assert not r.resolved
    assert r.fail_to_pass["tests/test_a.py::test_fix"] == MISSING


def test_subfailed_beside_passed_counts_as_failed():
    # old pytest-subtests: the test itself PASSES while a subtest fails
    log = PYTEST_ALL_PASS.replace(
        "PASSED tests/test_a.py::test_fix",
        "SUBFAILED[case] (i=1) tests/test_a.py::test_fix - assert 1 == 0\nPASSED tests/test_a.py::test_fix",
    )
    assert subfailed_tests(log) == {"tests/test_a.py::test_fix"}
    r = grade_log(INSTANCE, log)
    assert not r.resolved
    assert r.fail_to_pass["tests/test_a.py::test_fix"] == "FAILED"


def test_json_string_test_lists_are_accepted():
    inst = {**INSTANCE, "FAIL_TO_PASS": json.dumps(INSTANCE["FAIL_TO_PASS"]), "PASS_TO_PASS": "[]"}
    assert grade_log(inst, PYTEST_ALL_PASS).resolved


def harness_log(test_output: str, exit_code: int = 0, extra: str = "") -> str:
    return (
        "+ git apply -v /tmp/patch.diff\nChecking patch lib/core.py...\nApplied patch lib/core.py cleanly.\n"
        f"{extra}+ : '>>>>> Start Test Output'\n>>>>> Start Test Output\n"
        "+ pytest -rA tests/test_a.py tests/test_b.py\n"
        f"{test_output}+ : '>>>>> End Test Output'\n>>>>> End Test Output\n"
        f">>>>> Test Exit Code: {exit_code}\n"
        "+ git checkout abc123 tests/test_a.py\n"
        # outside the markers: must be ignored
        "FAILED tests/test_b.py::test_old\n"
    )


def test_harness_log_only_between_markers():
    r = grade_log(INSTANCE, harness_log(PYTEST_ALL_PASS))
    assert r.resolved, r
    assert r.status_map["tests/test_b.py::test_old"] == "PASSED"


def test_harness_log_with_swebench_repo_uses_its_parser():
    # django's parser reads unittest's "... ok" lines, not pytest summaries
    inst = {
        "instance_id": "django__django-1",
        "repo": "django/django",
        "FAIL_TO_PASS": ["test_fix (app.tests.T)"],
        "PASS_TO_PASS": ["test_old (app.tests.T)"],
    }
    out = "test_fix (app.tests.T) ... ok\ntest_old (app.tests.T) ... ok\n"
    assert grade_log(inst, harness_log(out)).resolved
    out_fail = "test_fix (app.tests.T) ... FAIL\ntest_old (app.tests.T) ... ok\n"
    assert not grade_log(inst, harness_log(out_fail)).resolved


def test_harness_log_patch_apply_failure_and_cut_short():
    r = grade_log(INSTANCE, harness_log(PYTEST_ALL_PASS, extra=">>>>> Patch Apply Failed\n"))
    assert not r.resolved and r.error and "Patch Apply Failed" in r.error
    cut = harness_log(PYTEST_ALL_PASS).split(">>>>> End Test Output")[0]
    r = grade_log(INSTANCE, cut)
    assert not r.resolved and r.error and "cut short" in r.error


def test_nonzero_exit_with_no_failure_reported_is_rejected():
    r = grade_log(INSTANCE, harness_log(PYTEST_ALL_PASS, exit_code=1))
    assert not r.resolved
    assert r.error and "exited with 1" in r.error


def test_instance_log_parser_name_wins():
    inst = {**INSTANCE, "repo": "someone/else", "log_parser": "parse_log_django"}
    out = "test_x ... ok\n"
    r = grade_log({**inst, "FAIL_TO_PASS": ["test_x"], "PASS_TO_PASS": []}, out)
    assert r.resolved


def test_no_tests_listed_is_an_error_not_a_resolution():
    r = grade_log({"instance_id": "x", "FAIL_TO_PASS": [], "PASS_TO_PASS": []}, PYTEST_ALL_PASS)
    assert not r.resolved and r.error
