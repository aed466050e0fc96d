"""Writers of test logs in each harness's format, for the grading tests.

Each writer turns {test id: status} into the text the real runner prints (pytest with
`-rA`, pytest `--verbose` as SWE-smith runs it, Django's runner, sympy's bin/test), and
the harness wrappers put it between the markers each harness's eval script prints.
"""

from __future__ import annotations

_VERBOSE_WORD = {"PASSED": "PASSED", "FAILED": "FAILED", "ERROR": "ERROR", "SKIPPED": "SKIPPED", "XFAIL": "XFAIL"}  # fmt: skip
_DJANGO_WORD = {"PASSED": "ok", "FAILED": "FAIL", "ERROR": "ERROR", "SKIPPED": "skipped 'not here'"}
_SYMPY_WORD = {"PASSED": "ok", "FAILED": "F", "ERROR": "E"}


def _counts(statuses: dict[str, str]) -> str:
    words = {"PASSED": "passed", "FAILED": "failed", "ERROR": "errors", "SKIPPED": "skipped", "XFAIL": "xfailed"}  # fmt: skip
    parts = []
    for status, word in words.items():
        n = sum(1 for s in statuses.values() if s == status)
        if n:
            parts.append(f"{n} {word}")
    return ", ".join(parts) or "no tests ran"


def pytest_summary(statuses: dict[str, str], truncate: bool = False) -> str:
    """`pytest -rA` output: the session header, progress dots, the short summary, the final line."""
    lines = [
        "============================= test session starts ==============================",
        "platform linux -- Python 3.11.2, pytest-7.2.1, pluggy-1.0.0",
        "rootdir: /testbed",
        f"collected {len(statuses)} items",
        "",
        "tests/test_mod.py " + "." * len(statuses) + "                                   [100%]",
        "",
        "=========================== short test summary info ============================",
    ]
    for test, status in statuses.items():
        if status == "FAILED":
            lines.append(f"FAILED {test} - AssertionError: assert 1 == 2")
        elif status == "ERROR":
            lines.append(f"ERROR {test} - RuntimeError: fixture broke")
        else:
            lines.append(f"{status} {test}")
    if not truncate:
        lines.append(
            f"========================= {_counts(statuses)} in 0.12s ========================="
        )
    return "\n".join(lines) + "\n"


def pytest_verbose(statuses: dict[str, str], color: bool = False) -> str:
    """`pytest --disable-warnings --color=no --tb=no --verbose` output, as SWE-smith runs it."""
    lines = ["============================= test session starts =============================="]
    n = len(statuses)
    for k, (test, status) in enumerate(statuses.items(), start=1):
        word = _VERBOSE_WORD[status]
        if color:
            word = f"\x1b[32m{word}\x1b[0m"
        lines.append(f"{test} {word} [{100 * k // n:3d}%]")
    lines.append(
        f"========================= {_counts(statuses)} in 0.12s ========================="
    )
    return "\n".join(lines) + "\n"


def django_output(statuses: dict[str, str]) -> str:
    """Django's `runtests.py --verbosity 2` lines: `test_x (app.tests.T) ... ok`."""
    lines = ["Testing against Django installed in '/testbed/django'", "Importing application app"]
    lines += [f"{test} ... {_DJANGO_WORD[status]}" for test, status in statuses.items()]
    lines += ["", "-" * 70, f"Ran {len(statuses)} tests in 0.010s", ""]
    return "\n".join(lines) + "\n"


def sympy_output(statuses: dict[str, str]) -> str:
    """sympy's `bin/test -C --verbose` lines: `test_x ok`, `test_y F`."""
    lines = ["============================= test process starts ==============================", f"sympy/core/tests/test_basic.py[{len(statuses)}] "]  # fmt: skip
    lines += [f"{test} {_SYMPY_WORD[status]}" for test, status in statuses.items()]
    lines.append("============================= tests finished ===================================")
    return "\n".join(lines) + "\n"


def swebench_log(output: str, exit_code: int | None = 0, command: str = "pytest -rA tests") -> str:
    """A SWE-bench 5.x eval log (bash -x trace, markers, the recorded test exit code)."""
    exit_line = f">>>>> Test Exit Code: {exit_code}\n" if exit_code is not None else ""
    return (
        "+ source /opt/miniconda3/bin/activate\n+ conda activate testbed\n"
        "+ git apply -v - <<'EOF_114329324912'\nChecking patch tests/test_mod.py...\n"
        "Applied patch tests/test_mod.py cleanly.\n"
        "+ : '>>>>> Start Test Output'\n>>>>> Start Test Output\n"
        f"+ {command}\n{output}"
        "+ : '>>>>> End Test Output'\n>>>>> End Test Output\n"
        f"{exit_line}+ git checkout abc123 tests/test_mod.py\nUpdated 1 path from 6d2a3b1\n"
    )


def swesmith_log(output: str) -> str:
    """A SWE-smith eval log: the test command between `+ : '>>>>> ...'` trace lines."""
    return (
        "+ cd /testbed\n+ git checkout mentorgym__lib.abc123.lm_modify__x1 -- tests\n"
        "+ : '>>>>> Start Test Output'\n>>>>> Start Test Output\n"
        "+ pytest --disable-warnings --color=no --tb=no --verbose tests\n"
        f"{output}"
        "+ : '>>>>> End Test Output'\n>>>>> End Test Output\n"
    )
