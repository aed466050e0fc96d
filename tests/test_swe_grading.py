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


# --- parity with each harness, on logs in each harness's own format -------------------------------

import random  # noqa: E402

import pytest  # noqa: E402
from swe_logs import (  # noqa: E402
    django_output,
    pytest_summary,
    pytest_verbose,
    swebench_log,
    swesmith_log,
    sympy_output,
)

from mentorgym.envs.swe.grading import (  # noqa: E402
    detect_format,
    parse_log,
    pick_harness,
    pick_parser,
    report_json_verdict,
)

PASSING = ("PASSED", "XFAIL")


def expected_verdict(
    harness: str, statuses: dict[str, str], f2p: list[str], p2p: list[str]
) -> bool:
    """Each harness's rule, written out directly from its documentation and source."""

    def get(t: str) -> str | None:
        return statuses.get(t)

    if harness == "swesmith":  # missing = passed; SKIPPED counts for neither side
        bad = lambda t: get(t) in ("FAILED", "ERROR")  # noqa: E731
        return not any(bad(t) for t in f2p + p2p)
    if harness in ("swebench4", "swegym"):  # SKIPPED counts for neither side; missing fails
        bad = lambda t: get(t) is None or get(t) in ("FAILED", "ERROR")  # noqa: E731
        return not any(bad(t) for t in f2p + p2p)
    # swebench 5.x / mentorgym: F2P must pass; P2P may also skip
    return all(get(t) in PASSING for t in f2p) and all(get(t) in (*PASSING, "SKIPPED") for t in p2p)


def _instance(harness: str, f2p: list[str], p2p: list[str], **kw: object) -> dict:
    return {"instance_id": "acme__lib-7", "repo": "acme/lib", "harness": harness, "FAIL_TO_PASS": f2p, "PASS_TO_PASS": p2p, **kw}  # fmt: skip


CASES = {
    "pytest_summary": (
        ["PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL"],
        lambda s: pytest_summary(s),
        [f"tests/test_mod.py::test_{i}" for i in range(6)],
    ),  # fmt: skip
    "pytest_verbose": (
        ["PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL"],
        lambda s: pytest_verbose(s),
        [f"tests/test_mod.py::test_{i}" for i in range(6)],
    ),  # fmt: skip
    "django": (
        ["PASSED", "FAILED", "ERROR", "SKIPPED"],
        django_output,
        [f"test_{i} (app.tests.T)" for i in range(6)],
    ),  # fmt: skip
    "sympy": (["PASSED", "FAILED", "ERROR"], sympy_output, [f"test_{i}" for i in range(6)]),
}


@pytest.mark.parametrize("fmt", sorted(CASES))
@pytest.mark.parametrize("harness", ["swebench", "swebench4", "swegym", "swesmith", "mentorgym"])
def test_grade_log_agrees_with_each_harness_on_its_format(fmt: str, harness: str) -> None:
    statuses_pool, write, names = CASES[fmt]
    rng = random.Random(f"{fmt}-{harness}")
    resolved_seen = set()
    for _ in range(60):
        # mostly passing, so resolved and unresolved verdicts both occur
        statuses = {
            n: ("PASSED" if rng.random() < 0.7 else rng.choice(statuses_pool)) for n in names
        }
        if rng.random() < 0.2:
            statuses.pop(names[rng.randrange(len(names))])  # a test the log never mentions
        f2p, p2p = names[:2], names[2:]
        output = write(statuses)
        if harness == "swesmith":
            log = swesmith_log(output)
        else:
            failing = any(s in ("FAILED", "ERROR") for s in statuses.values())
            log = swebench_log(output, exit_code=1 if failing else 0)
        inst = _instance(harness, f2p, p2p)
        result = grade_log(inst, log)
        assert result.error is None, result.error
        want = expected_verdict(harness, statuses, f2p, p2p)
        assert result.resolved == want, (statuses, result.fail_to_pass, result.pass_to_pass)
        resolved_seen.add(want)
    assert resolved_seen == {True, False}


def test_format_detection_and_parser_choice() -> None:
    s = {"tests/test_mod.py::test_a": "PASSED"}
    assert detect_format(pytest_summary(s)) == "pytest_summary"
    assert detect_format(pytest_verbose(s)) == "pytest_verbose"
    assert detect_format(django_output({"test_a (app.T)": "PASSED"})) == "django"
    assert detect_format(sympy_output({"test_a": "PASSED"})) == "sympy"
    assert detect_format("nothing here\n") is None
    inst = {"repo": "acme/lib", "FAIL_TO_PASS": [], "PASS_TO_PASS": []}
    assert pick_parser({**inst, "log_parser": "parse_log_django"}, pytest_verbose(s))[0] == "parse_log_django"  # fmt: skip
    assert pick_parser({**inst, "repo": "sympy/sympy"}, pytest_verbose(s))[0] == "parse_log_sympy"
    assert pick_parser(inst, pytest_verbose(s))[0] == "parse_log_pytest_verbose"
    assert pick_parser(inst, pytest_summary(s), "swebench")[0] == "parse_log_pytest"
    assert pick_parser(inst, pytest_summary(s), "mentorgym")[0] == "parse_pytest_report"


def test_pick_harness_from_the_instance() -> None:
    base = {"FAIL_TO_PASS": [], "PASS_TO_PASS": []}
    assert pick_harness({**base, "repo": "getmoto/moto"}) == "swegym"
    assert pick_harness({**base, "image": "xingyaoww/sweb.eval.x86_64.a_s_b-1"}) == "swegym"
    assert (
        pick_harness({**base, "image_name": "jyangballin/swesmith.x86_64.a_1776_b.1"}) == "swesmith"
    )
    assert pick_harness({**base, "repo": "django/django"}) == "swebench"
    assert pick_harness({**base, "repo": "x/y", "log_parser": "parse_log_pytest"}) == "swebench"
    assert pick_harness({**base, "repo": "mentorgym-builtin/semverkit"}) == "mentorgym"
    with pytest.raises(ValueError, match="harness"):
        pick_harness({**base, "harness": "nope"})


def test_skipped_fail_to_pass_differs_between_4x_and_5x() -> None:
    f2p, p2p = ["tests/test_mod.py::test_0"], ["tests/test_mod.py::test_1"]
    log = swebench_log(pytest_summary({f2p[0]: "SKIPPED", p2p[0]: "PASSED"}))
    assert not grade_log(_instance("swebench", f2p, p2p), log).resolved
    assert grade_log(_instance("swebench4", f2p, p2p), log).resolved
    assert grade_log(_instance("swegym", f2p, p2p), log).resolved


def test_fake_passed_lines_from_a_conftest_and_the_exit_code_check() -> None:
    # a conftest prints PASSED for every test after the real run failed; pytest exits 1
    f2p, p2p = ["tests/test_mod.py::test_0"], ["tests/test_mod.py::test_1"]
    real = pytest_summary({f2p[0]: "FAILED", p2p[0]: "PASSED"})
    fake = "".join(f"PASSED {t}\n" for t in f2p + p2p)
    # the fake lines hide the FAILED one (the last status wins) and pytest exited 1
    log = swebench_log(real.replace(f"FAILED {f2p[0]} - AssertionError: assert 1 == 2\n", "") + fake, exit_code=1)  # fmt: skip
    r5 = grade_log(_instance("swebench", f2p, p2p), log)
    assert not r5.resolved and r5.error and "exited with 1" in r5.error
    assert grade_log(_instance("swebench4", f2p, p2p), log).resolved  # 4.x has no such check
    # with exit code 0 forged too, no log-only grader can tell: that is what the guard is for
    assert grade_log(_instance("swebench", f2p, p2p), log.replace("Exit Code: 1", "Exit Code: 0")).resolved  # fmt: skip


def test_parametrized_ids_with_spaces_and_brackets() -> None:
    ids = ["tests/test_mod.py::test_p[a b]", "tests/test_mod.py::test_p[[x]-y]", "tests/test_mod.py::test_q[>=1.0 <2]"]  # fmt: skip
    log = swebench_log(pytest_summary(dict.fromkeys(ids, "PASSED")))
    assert grade_log(_instance("mentorgym", ids[:1], ids[1:]), log).resolved
    # swebench's -rA parser splits at the space: its datasets hold the cut id, which it finds
    r = grade_log(_instance("swebench", ids[:1], ids[1:]), log)
    assert not r.resolved and r.fail_to_pass[ids[0]] == MISSING
    cut = ["tests/test_mod.py::test_p[a", "tests/test_mod.py::test_p[[x]-y]", "tests/test_mod.py::test_q[>=1.0"]  # fmt: skip
    assert grade_log(_instance("swebench", cut[:1], cut[1:]), log).resolved
    # SWE-smith's verbose regex never reads an id with a space; unmentioned counts as passed
    vlog = swesmith_log(pytest_verbose({**dict.fromkeys(ids, "PASSED"), ids[0]: "FAILED"}))
    assert grade_log(_instance("swesmith", ids[:1], ids[1:]), vlog).resolved


def test_ansi_colour_is_stripped_by_the_env_parser() -> None:
    t = "tests/test_mod.py::test_0"
    coloured = pytest_summary({t: "PASSED"}).replace(f"PASSED {t}", f"\x1b[32mPASSED\x1b[0m {t}")
    assert grade_log(_instance("mentorgym", [t], []), coloured).resolved
    assert detect_format(pytest_verbose({t: "PASSED"}, color=True)) == "pytest_verbose"


def test_subtest_failure_in_each_layout() -> None:
    t = "tests/test_mod.py::test_0"
    log = pytest_summary({t: "PASSED"}).replace(
        f"PASSED {t}", f"SUBFAILED[k=1] {t} - assert 0\nPASSED {t}"
    )
    r = grade_log(_instance("mentorgym", [t], []), log)
    assert not r.resolved and r.fail_to_pass[t] == "FAILED"


def test_truncated_logs() -> None:
    t = "tests/test_mod.py::test_0"
    r = grade_log(_instance("mentorgym", [t], []), pytest_summary({t: "PASSED"}, truncate=True))
    assert not r.resolved and r.error and "truncated" in r.error
    cut = swebench_log(pytest_summary({t: "PASSED"})).split("+ : '>>>>> End")[0]
    for harness in ("swebench", "swebench4", "swesmith"):
        r = grade_log(_instance(harness, [t], []), cut)
        assert not r.resolved and r.error and "cut short" in r.error


def test_swebench_parses_the_whole_log_when_the_slice_is_empty() -> None:
    t = "tests/test_mod.py::test_0"
    log = swebench_log("") + pytest_summary({t: "PASSED"})  # results printed after the markers
    assert grade_log(_instance("swebench", [t], []), log).resolved
    assert parse_log(_instance("swebench4", [t], []), log)[0] == {}


def test_report_json_quirk_of_swesmith() -> None:
    smith = {"patch_is_None": False, "patch_exists": True, "patch_successfully_applied": False, "resolved": True}  # fmt: skip
    assert report_json_verdict(smith, "a__b.1") is True
    bench = {"a__b-1": {"patch_successfully_applied": True, "resolved": False}}
    assert report_json_verdict(bench, "a__b-1") is False
    with pytest.raises(ValueError):
        report_json_verdict({"other": {}}, "a__b-1")
