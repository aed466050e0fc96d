"""The grader's side of the guard plugin (`guard_plugin.py`): install it, read what it saw.

The plugin runs inside the grading container's pytest process and writes one JSON file
per pytest process. Here those files are checked: they must exist when pytest ran, carry
this run's token, come from the guard the grader installed, describe a finished session,
list no tampering, and agree with the log: a test the log reports as PASSED must be one
the guard saw pass. Anything else is tampering and the grade is 0.
"""

from __future__ import annotations

import json
import secrets
import shlex
from dataclasses import dataclass, field
from pathlib import Path

GUARD_DIR = "/tmp/.mentorgym_grade"
"""Where grading puts its files in the grading container: patches, scripts, the guard, logs."""
GUARD_OUT = f"{GUARD_DIR}/out"
GUARD_MODULE = "mentorgym_guard"
_PASSING = ("PASSED", "XPASS", "XFAIL")  # what swebench counts as passing, and XPASS


def plugin_source() -> str:
    """The guard plugin's source, to be written to `GUARD_DIR/mentorgym_guard.py`."""
    return (Path(__file__).parent / "guard_plugin.py").read_text(encoding="utf-8")


def new_token() -> str:
    return secrets.token_hex(16)


def env_prefix(token: str, patched_files: list[str]) -> str:
    """Shell `export` lines that make every pytest run in the script load the guard first."""
    exports = {
        "PYTHONPATH": f"{GUARD_DIR}${{PYTHONPATH:+:$PYTHONPATH}}",
        "PYTEST_ADDOPTS": f"-p {GUARD_MODULE} ${{PYTEST_ADDOPTS:-}}",
        "MENTORGYM_GUARD_OUT": GUARD_OUT,
        "MENTORGYM_GUARD_TOKEN": token,
        "MENTORGYM_GUARD_PATCHED": json.dumps(patched_files),
    }
    lines = []
    for key, value in exports.items():
        # PYTHONPATH / PYTEST_ADDOPTS expand their old value; the rest are literal
        quoted = f'"{value}"' if "$" in value else shlex.quote(value)
        lines.append(f"export {key}={quoted}")
    return "\n".join(lines) + "\n"


@dataclass
class GuardVerdict:
    """What the guard's files say about one grading run."""

    ran: bool
    """True when at least one guarded pytest process wrote its file."""
    tests: dict[str, str] = field(default_factory=dict)
    """Each test's status as the guard saw it (PASSED, FAILED, ERROR, SKIPPED, XFAIL, XPASS)."""
    tampering: list[str] = field(default_factory=list)


def read_guard_files(
    texts: list[str], token: str, guard_file: str = f"{GUARD_DIR}/{GUARD_MODULE}.py"
) -> GuardVerdict:
    """Merge the guard's per-process JSON files, checking each one's token, origin and completeness."""
    verdict = GuardVerdict(ran=bool(texts))
    for text in texts:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            verdict.tampering.append("a guard report is not valid JSON: it was overwritten")
            continue
        if not isinstance(data, dict) or data.get("token") != token:
            verdict.tampering.append("a guard report lacks this run's token: it was forged")
            continue
        if data.get("guard_file") != guard_file:
            verdict.tampering.append(
                f"pytest loaded {data.get('guard_file')!r} as the guard, not the grader's plugin"
            )
        if not data.get("finished") and not data.get("worker"):
            verdict.tampering.append("a pytest session ended before it finished")
        verdict.tampering += [str(t) for t in data.get("tampering", [])]
        for name, status in (data.get("tests") or {}).items():
            verdict.tests[str(name)] = str(status)
    return verdict


def cross_check(
    verdict: GuardVerdict, status_map: dict[str, str], graded: list[str], pytest_ran: bool
) -> list[str]:
    """Tampering reasons: the guard's own, a missing guard report, a log the guard contradicts."""
    if not verdict.ran:
        if not pytest_ran:
            return []
        return [
            "pytest ran but the guard wrote no report: the test process ended before pytest "
            "finished (os._exit, sys.exit at import, a kill) or the guard was disabled"
        ]
    reasons = list(verdict.tampering)
    if not any(t in verdict.tests for t in graded):
        # The log names tests differently from pytest (a repo parser that rewrites ids),
        # or no graded test ran at all: nothing to compare test by test.
        return reasons
    for test in graded:
        logged = status_map.get(test)
        seen = verdict.tests.get(test)
        if logged in _PASSING and seen not in _PASSING:
            what = "never ran it" if seen is None else f"saw {seen}"
            reasons.append(f"the log reports {test} {logged} but pytest {what}")
    return reasons
