"""The grader's side of the supervised test run: the files it installs, the record it reads.

In the grading container, `supervisor.py` runs the test command as its child and reads
the guard plugin's (`guard_plugin.py`) lines from a pipe as pytest writes them; after the
command and everything it started are gone it writes the record. Here that record is
judged (`judge_record`):

- every line must be the guard's: a JSON object numbered 0, 1, 2, ... per process, with
  a closing `finish` line that counts the lines before it (an injected, dropped or
  rewritten line breaks the count; a process that died early has no closing line);
- each graded test must be seen to run and pass: setup, call and teardown reported
  and passed (an xfail counts as the harness counts it); a test that was not collected,
  not run, or is missing from the record is not passed;
- each capability use the audit hook saw is a finding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

GUARD_DIR = "/tmp/.mentorgym_grade"
"""Where grading puts its files in the grading container: files, scripts, the guard, logs."""
GUARD_MODULE = "mentorgym_guard"
RECORD = f"{GUARD_DIR}/record.json"
POLICY = f"{GUARD_DIR}/policy.json"
_PASSING = ("PASSED", "XFAIL")  # what the harness (swebench 5.x) counts as passing


def plugin_source() -> str:
    """The guard plugin's source, to be written to `GUARD_DIR/mentorgym_guard.py`."""
    return (Path(__file__).parent / "guard_plugin.py").read_text(encoding="utf-8")


def supervisor_source() -> str:
    return (Path(__file__).parent / "supervisor.py").read_text(encoding="utf-8")


def env_exports() -> str:
    """Shell `export` lines that make every pytest run in the script load the guard first."""
    return (
        f'export PYTHONPATH="{GUARD_DIR}${{PYTHONPATH:+:$PYTHONPATH}}"\n'
        f'export PYTEST_ADDOPTS="-p {GUARD_MODULE} ${{PYTEST_ADDOPTS:-}}"\n'
        f"export MENTORGYM_GUARD_POLICY={POLICY}\n"
    )


@dataclass
class RecordVerdict:
    """What the supervisor's record says about one grading run."""

    tests: dict[str, str] = field(default_factory=dict)
    """Each test's status as the guard saw it (PASSED, FAILED, ERROR, SKIPPED, XFAIL, XPASS)."""
    tampering: list[str] = field(default_factory=list)
    """Why the record cannot be trusted; non-empty = not resolved."""
    findings: list[str] = field(default_factory=list)
    """Capabilities the audit hook saw the graded files use, each `path:line: what`."""
    timed_out: bool = False


def _status(previous: str | None, when: str, outcome: str, xfail: bool) -> str:
    """A test's status in the -rA vocabulary, folding its setup / call / teardown reports."""
    if when == "call":
        if outcome == "passed":
            return "XPASS" if xfail else "PASSED"
        if outcome == "failed":
            return "FAILED"
        return "XFAIL" if xfail else "SKIPPED"
    if outcome == "failed":
        return "ERROR"
    if outcome == "skipped" and when == "setup":
        return "XFAIL" if xfail else "SKIPPED"
    if when == "setup":
        return "SETUP_ONLY"  # setup passed, the call not seen (yet)
    return previous or "TEARDOWN_ONLY"


def _parse_lines(lines: list[str], verdict: RecordVerdict) -> dict[int, list[dict]]:
    """Events per process; a line that is not the guard's is tampering."""
    by_pid: dict[int, list[dict]] = {}
    for line in lines:
        try:
            event = json.loads(line)
            pid, seq, kind = int(event["pid"]), int(event["seq"]), str(event["e"])
        except (ValueError, TypeError, KeyError):
            verdict.tampering.append("the test record has a line the guard did not write")
            return {}
        events = by_pid.setdefault(pid, [])
        if seq != len(events) or not kind:
            verdict.tampering.append(
                f"the test record of process {pid} is out of sequence (line {seq} after "
                f"{len(events)}): lines were injected into it"
            )
            return {}
        events.append(event)
    return by_pid


def _check_closed(by_pid: dict[int, list[dict]], verdict: RecordVerdict) -> None:
    for pid, events in by_pid.items():
        last = events[-1]
        if last["e"] != "finish" or last.get("lines") != len(events) - 1:
            verdict.tampering.append(
                f"pytest process {pid} ended before its session finished (no closing record): "
                "it died, was killed, or exited early"
            )


def judge_record(text: str | None, graded: list[str], pytest_expected: bool) -> RecordVerdict:
    """The verdict of the supervisor's record (None: it wrote none) for the graded tests."""
    verdict = RecordVerdict()
    if text is None:
        verdict.tampering.append("the supervisor wrote no record: the run was cut short")
        return verdict
    try:
        record = json.loads(text)
        lines = [str(x) for x in record["lines"]]
    except (ValueError, TypeError, KeyError):
        verdict.tampering.append("the supervisor's record is not valid")
        return verdict
    verdict.timed_out = bool(record.get("timed_out"))
    if record.get("partial_line"):
        verdict.tampering.append("the test record ends in a partial line")
    by_pid = _parse_lines(lines, verdict)
    if not by_pid and pytest_expected and not verdict.tampering:
        verdict.tampering.append("pytest never reported to the supervisor (it did not run)")
    _check_closed(by_pid, verdict)
    for events in by_pid.values():
        for event in events:
            if event["e"] == "report":
                node = str(event.get("nodeid"))
                verdict.tests[node] = _status(
                    verdict.tests.get(node),
                    str(event.get("when")),
                    str(event.get("outcome")),
                    bool(event.get("xfail")),
                )
            elif event["e"] == "audit":
                from mentorgym.envs.swe.capabilities import CAPABILITIES

                what = CAPABILITIES.get(str(event.get("capability")), "a capability")
                where = f"{event.get('file')}:{event.get('line')}"
                verdict.findings.append(f"{where}: {what} (at run time: {event.get('event')})")
    return verdict


def unseen_or_failed(verdict: RecordVerdict, graded: list[str]) -> list[str]:
    """Graded tests the record does not show passing, each with what it shows."""
    out = []
    for test in graded:
        seen = verdict.tests.get(test)
        if seen not in _PASSING:
            out.append(f"{test}: {'never ran' if seen is None else seen}")
    return out
