"""Reading a number out of an answer and comparing two answers numerically.

`1,000`, `1000.0`, `$1000`, `1000 dollars` and `\\boxed{1000}` are the same answer; so are
`3/4`, `\\frac{3}{4}` and `0.75`. Where a text holds several numbers, the last one counts
(the usual GSM8K rule). `50%` reads as 50, and matches an expected 50 or 0.5.
"""

from __future__ import annotations

import math
import re

REL_TOL = 1e-6
"""Relative tolerance for float rounding (`0.1 + 0.2` is `0.3`)."""

_NUM = r"\d+(?:\.\d+)?|\.\d+"
_NUMBER_RE = re.compile(
    rf"(?P<sign>-)?(?P<num>{_NUM})(?:\s*/\s*(?P<den>{_NUM}))?(?P<pct>\s*%)?(?![\d.]*\d)"
)
_DIGIT_COMMA_RE = re.compile(r"(?<=\d),(?=\d)")
_FRAC_RE = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")


def _last_boxed(text: str) -> str | None:
    """The contents of the last `\\boxed{...}` (braces may nest), or None."""
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


def _parse(text: object) -> tuple[float, bool] | None:
    """(value as written, whether it carried a %) of the last number in `text`, or None."""
    if not isinstance(text, str):
        return None
    boxed = _last_boxed(text)
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
    if m["sign"]:
        value = -value
    return value, m["pct"] is not None


def extract_number(text: object) -> float | None:
    """The last number in `text` as a float (`"$1,000"` -> 1000.0, `"3/4"` -> 0.75), or None.

    A percentage reads as written: `"50%"` -> 50.0.
    """
    parsed = _parse(text)
    return parsed[0] if parsed is not None else None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-9)


def answers_match(given: object, expected: object) -> bool:
    """Whether the answer `given` equals `expected` numerically (relative tolerance 1e-6).

    A percentage in either one also matches its fraction (`50%` vs `0.5`). When `expected`
    holds no number, the two are compared as text, ignoring case and spacing.
    """
    if not isinstance(given, str) or not isinstance(expected, str | int | float):
        return False
    expected_text = str(expected)
    want = _parse(expected_text)
    if want is None:
        return " ".join(given.lower().split()) == " ".join(expected_text.lower().split())
    got = _parse(given)
    if got is None:
        return False
    (g, g_pct), (w, w_pct) = got, want
    if _close(g, w):
        return True
    return (g_pct and _close(g / 100, w)) or (w_pct and _close(g, w / 100))
