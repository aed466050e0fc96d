"""Checking an answer against the gold answer: plain numbers, text, then math-verify.

`check_answer(given, expected)` tries three readings, in order:

1. **Text.** A gold answer that is words (`\\text{Evelyn}`, `Paris`, `\\text{(C)}`) is
   compared as text, ignoring case, spacing, a `\\text{}` wrapper and a final period.
2. **Plain numbers.** Where both sides are one number (`1,000`, `$1,000.00`, `18 apples`,
   `3/4`, `\\frac{3}{4}`, `50%`, `90^\\circ`), they are compared as floats with a
   relative tolerance of 1e-6; a percentage also matches its fraction (`50%` vs `0.5`).
   These are the GSM8K rules, and they never reach sympy.
3. **math-verify.** Everything else (`3\\sqrt{13}` vs `\\sqrt{117}`, `(3, \\frac{\\pi}{2})`,
   `[2, 5)`, `6-5i`, `x^2+2x+1` vs `(x+1)^2`) goes to Hugging Face's math-verify, which
   parses the LaTeX with latex2sympy2_extended and compares with sympy. `1+1` is not `1`.

A `\\boxed{...}` in either side is unwrapped first (the last one counts), and `$...$`,
`\\(...\\)` and `\\[...\\]` around an answer are dropped.

The math-verify check runs in a worker process (`verify_worker.py`) with a time limit of
`VERIFY_TIMEOUT_S`; a check that runs past it is killed and its verdict is `"timeout"`
(not correct). This works from any thread, which the rollout engine's env threads need:
math-verify's own time limit uses `signal.alarm`, which only the main thread may set.
Workers are started on demand (about two seconds each, to import sympy), at most one per
CPU core (more checks at once wait for a free one, and the wait does not count against
the time limit), reused, and ended at exit.

`extract_number` is the older reading kept for callers that want the last number in a
text (the usual GSM8K rule).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import select
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mentorgym.errors import MentorgymError

REL_TOL = 1e-6
"""Relative tolerance for plain numbers (`0.1 + 0.2` is `0.3`)."""
VERIFY_TIMEOUT_S = 5.0
"""Seconds one math-verify check may take (math-verify's own default)."""
WORKER_START_TIMEOUT_S = 120.0
"""Seconds a worker may take to import math-verify before it counts as broken."""

Method = Literal["identical", "number", "text", "symbolic", "timeout", "error", "empty"]


@dataclass(frozen=True)
class Verdict:
    """Whether an answer is correct, and which reading decided it.

    `method` is `"identical"` (the same text), `"number"`, `"text"` or `"symbolic"`
    (math-verify) for a decided check; `"timeout"` when math-verify ran past its time
    limit and `"error"` when its worker died (both count as not correct); `"empty"` when
    there was no answer text to check.
    """

    correct: bool
    method: Method


# --- \boxed{} and delimiters -------------------------------------------------------------------


def last_boxed(text: str) -> str | None:
    """The contents of the last `\\boxed{...}` (braces may nest), or None (none, or unclosed)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def _unwrap(text: str) -> str:
    """The answer itself: the last `\\boxed{}` if any, without math delimiters around it."""
    boxed = last_boxed(text)
    t = (boxed if boxed is not None else text).strip()
    for left, right in _DELIMITERS:
        if len(t) > len(left) + len(right) and t.startswith(left) and t.endswith(right):
            t = t[len(left) : -len(right)].strip()
            break
    return t


# --- text answers --------------------------------------------------------------------------------

_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox)\s*\{([^{}]*)\}")
_WORDS_RE = re.compile(r"[A-Za-z][A-Za-z '\-.]*")
_LONG_WORD_RE = re.compile(r"[A-Za-z]{3,}")
_CHOICE_RE = re.compile(r"\(([A-Za-z])\)")


def _is_text(answer: str) -> bool:
    """Whether the answer is words: `\\text{...}` without digits, or plain letters.

    Plain letters count only with a word of three or more letters, so that `p - q` or `xy`
    stay algebra.
    """
    m = _TEXT_WRAPPER_RE.fullmatch(answer.rstrip(". "))
    if m is not None:
        return any(c.isalpha() for c in m[1]) and not any(c.isdigit() for c in m[1])
    return bool(_WORDS_RE.fullmatch(answer) and _LONG_WORD_RE.search(answer))


def _words(answer: str) -> str:
    """The answer as lowercase words, without a `\\text{}` wrapper, a final period or the
    parentheses of a choice (`\\text{(C)}` reads `c`)."""
    t = answer.strip().rstrip(". ")
    m = _TEXT_WRAPPER_RE.fullmatch(t)
    t = " ".join((m[1] if m else t).lower().split()).strip(" .")
    choice = _CHOICE_RE.fullmatch(t)
    return choice[1] if choice else t


# --- plain numbers ---------------------------------------------------------------------------------

_NUM = r"\d+(?:\.\d+)?|\.\d+"
_PLAIN_RE = re.compile(
    rf"(?P<sign>[-+])?\s*(?P<num>{_NUM})(?:\s*/\s*(?P<den>{_NUM}))?\s*(?P<pct>%)?"
    r"(?:\s+(?P<unit>[A-Za-z]{2,}(?:\s+[A-Za-z]{2,})?))?\s*\.?"
)
_THOUSANDS_RE = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,])")
_NUMERIC_FRAC_RE = re.compile(rf"\\[dt]?frac\{{\s*({_NUM})\s*\}}\{{\s*({_NUM})\s*\}}")
_MIXED_NUMBER_RE = re.compile(r"\d\s*\\[dt]?frac")
_MATH_WORDS = {"pi", "sqrt", "sin", "cos", "tan", "log", "ln", "exp", "mod", "inf", "infty"}
"""Words after a number that make it algebra, not a unit (`5 pi` is not `5`)."""


def _plain_number(answer: str) -> tuple[float, bool] | None:
    """(value, whether it carried a %) when the whole answer is one number, else None.

    Allowed around the number: `$`, thousands commas, a `%`, a degree sign, a unit of one
    or two words (`18 apples`, `5 km per hour`) and a final period.
    """
    if _MIXED_NUMBER_RE.search(answer):  # `4\frac{2}{3}` is 14/3: math-verify reads those
        return None
    t = _TEXT_WRAPPER_RE.sub(r" \1", answer)
    t = _NUMERIC_FRAC_RE.sub(r"\1/\2", t)
    for old, new in (
        ("\\%", "%"),
        ("\\$", ""),
        ("$", ""),
        ("\\!", ""),
        ("\\,", ""),
        ("^\\circ", ""),
        ("^{\\circ}", ""),
        ("\u00b0", ""),
        ("\u2212", "-"),
        ("\u2013", "-"),
    ):
        t = t.replace(old, new)
    t = _THOUSANDS_RE.sub(lambda m: m[0].replace(",", ""), t.strip())
    m = _PLAIN_RE.fullmatch(t)
    if m is None:
        return None
    if m["unit"] and any(w.lower() in _MATH_WORDS for w in m["unit"].split()):
        return None
    value = float(m["num"])
    if m["den"] is not None:
        den = float(m["den"])
        if den == 0:
            return None
        value /= den
    return (-value if m["sign"] == "-" else value), m["pct"] is not None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-9)


def _numbers_match(given: tuple[float, bool], expected: tuple[float, bool]) -> bool:
    (g, g_pct), (w, w_pct) = given, expected
    if _close(g, w):
        return True
    return (g_pct and _close(g / 100, w)) or (w_pct and _close(g, w / 100))


# --- the check ---------------------------------------------------------------------------------------


def check_answer(given: object, expected: object, *, timeout: float = VERIFY_TIMEOUT_S) -> Verdict:
    """Whether the answer `given` equals the gold answer `expected`, and how that was decided.

    `given` is agent-written text: anything that is not a non-empty string is not correct.
    `expected` may be a string or a number. `timeout` bounds the math-verify check.
    """
    if not isinstance(given, str) or not isinstance(expected, str | int | float):
        return Verdict(False, "empty")
    got, want = _unwrap(given), _unwrap(str(expected))
    if not got or not want:
        return Verdict(False, "empty")
    if got == want:
        return Verdict(True, "identical")
    if _is_text(want):
        return Verdict(_words(got) == _words(want), "text")
    got_number, want_number = _plain_number(got), _plain_number(want)
    if got_number is not None and want_number is not None:
        return Verdict(_numbers_match(got_number, want_number), "number")
    return _WORKERS.check(gold=want, given=got, timeout=timeout)


def answers_match(given: object, expected: object, *, timeout: float = VERIFY_TIMEOUT_S) -> bool:
    """Whether `given` equals `expected` (see `check_answer`); a timeout is not a match."""
    return check_answer(given, expected, timeout=timeout).correct


# --- math-verify in worker processes ------------------------------------------------------------

WORKER_SCRIPT = Path(__file__).with_name("verify_worker.py")


class _Worker:
    """One `verify_worker.py` process and the bytes read from it so far."""

    def __init__(self) -> None:
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._buffer = b""
        try:
            ready = self._read_line(time.monotonic() + WORKER_START_TIMEOUT_S)
        except EOFError:
            ready = None
        if ready != '{"ready": true}':
            self._stderr.seek(0)
            why = self._stderr.read().decode(errors="replace").strip()[-2000:]
            self.kill()
            raise MentorgymError(
                f"the math-verify worker ({WORKER_SCRIPT}) did not start: "
                f"{why or f'no word from it within {WORKER_START_TIMEOUT_S:g} s'}. "
                "Install the grader with `pip install math-verify` in this Python."
            )

    def ask(self, gold: str, given: str, timeout: float) -> bool | Literal["timeout", "error"]:
        request = json.dumps({"gold": gold, "given": given}).encode() + b"\n"
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(request)
            self.proc.stdin.flush()
            line = self._read_line(time.monotonic() + timeout)
        except (BrokenPipeError, EOFError):
            return "error"
        if line is None:
            return "timeout"
        return bool(json.loads(line)["equal"])

    def _read_line(self, deadline: float) -> str | None:
        """The next line the worker writes, or None at the deadline; EOFError if it died."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        poller = select.poll()  # not select(2): descriptors past 1023 are common in big rollouts
        poller.register(fd, select.POLLIN)
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("the math-verify worker exited")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self._stderr):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:  # a request left in the buffer of a dead worker's stdin
                pass

    def close(self) -> None:
        """End the worker politely (end of input), killing it if it does not exit."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


class _WorkerPool:
    """Up to `max_workers` workers shared by every thread; a check takes an idle one or starts one."""

    def __init__(self, max_workers: int) -> None:
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_workers)

    def check(self, *, gold: str, given: str, timeout: float) -> Verdict:
        with self._slots:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            if worker is None:
                worker = _Worker()
            try:
                result = worker.ask(gold, given, timeout)
            except BaseException:
                worker.kill()
                raise
            if result == "timeout" or result == "error":
                worker.kill()  # it may still be computing: a fresh one takes the next check
                return Verdict(False, result)
            with self._lock:
                self._idle.append(worker)
            return Verdict(result, "symbolic")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()

    def forget_after_fork(self, max_workers: int) -> None:
        """In a forked child: the parent's workers are the parent's (sharing their pipes would
        cross the replies), and a lock held by another thread at the fork would never open."""
        self._idle = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_workers)


_MAX_WORKERS = os.cpu_count() or 2
_WORKERS = _WorkerPool(max_workers=_MAX_WORKERS)
atexit.register(_WORKERS.close)
os.register_at_fork(after_in_child=lambda: _WORKERS.forget_after_fork(_MAX_WORKERS))


# --- the last number (GSM8K's rule) -------------------------------------------------------------

_NUMBER_RE = re.compile(
    rf"(?P<sign>-)?(?P<num>{_NUM})(?:\s*/\s*(?P<den>{_NUM}))?(?P<pct>\s*%)?(?![\d.]*\d)"
)
_DIGIT_COMMA_RE = re.compile(r"(?<=\d),(?=\d)")
_FRAC_RE = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")


def extract_number(text: object) -> float | None:
    """The last number in `text` as a float (`"$1,000"` -> 1000.0, `"3/4"` -> 0.75), or None.

    A percentage reads as written: `"50%"` -> 50.0. Inside a `\\boxed{}`, only its contents.
    """
    if not isinstance(text, str):
        return None
    boxed = last_boxed(text)
    t = boxed if boxed is not None else text
    t = _FRAC_RE.sub(r"(\1)/(\2)", t)
    # LaTeX and typography that would hide a number or its sign.
    for old, new in (
        ("\\%", "%"),
        ("\\$", ""),
        ("$", ""),
        ("\\!", ""),
        ("\\,", ""),
        ("(", ""),
        (")", ""),
        ("\u2212", "-"),
        ("\u2013", "-"),
    ):
        t = t.replace(old, new)
    t = _DIGIT_COMMA_RE.sub("", t)  # thousands separators: 1,000 -> 1000
    matches = list(_NUMBER_RE.finditer(t))
    if not matches:
        return None
    m = matches[-1]
    value = float(m["num"])
    if m["den"] is not None:
        den = float(m["den"])
        if den == 0:
            return None
        value /= den
    return -value if m["sign"] else value
