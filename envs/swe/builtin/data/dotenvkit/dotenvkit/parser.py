"""Parse .env text into an ordered dict of names to values."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from dotenvkit.expand import expand

_NAME_RE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)$", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "\\$"}


class DotenvError(ValueError):
    """A line that cannot be parsed; carries the 1-based line number."""

    def __init__(self, message: str, lineno: int) -> None:
        super().__init__(f"line {lineno}: {message}")
        self.lineno = lineno


def _unescape_double(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _find_closing_quote(text: str, quote: str) -> int:
    """Index of the unescaped closing `quote` in `text` (which starts after the opening one)."""
    i = 0
    while i < len(text):
        if text[i] == "\\" and quote == '"':
            i += 2
            continue
        if text[i] == quote:
            return i
        i += 1
    return -1


def _strip_comment(value: str) -> str:
    """Drop an inline comment: a ``#`` preceded by whitespace ends an unquoted value."""
    m = re.search(r"\s#", value)
    return (value[: m.start()] if m else value).strip()


def parse(
    text: str, *, interpolate: bool = True, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Parse .env `text`. Later assignments win; `env` (default: none) backs up expansion."""
    result: dict[str, str] = {}
    lines = text.splitlines()
    lineno = 0
    while lineno < len(lines):
        line = lines[lineno]
        lineno += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _NAME_RE.match(stripped)
        if m is None:
            raise DotenvError(f"expected NAME=VALUE, got {stripped!r}", lineno)
        name, raw = m.group(1), m.group(2)
        start = lineno
        if raw[:1] in ("'", '"'):
            quote = raw[0]
            body = raw[1:]
            end = _find_closing_quote(body, quote)
            # Double-quoted values may span lines: keep reading until the quote closes.
            while end < 0 and quote == '"' and lineno < len(lines):
                body += "\n" + lines[lineno]
                lineno += 1
                end = _find_closing_quote(body, quote)
            if end < 0:
                raise DotenvError(f"unterminated {quote} quote in the value of {name}", start)
            rest = body[end + 1 :].strip()
            if rest and not rest.startswith("#"):
                raise DotenvError(
                    f"unexpected text after the closing quote of {name}: {rest!r}", start
                )
            value = body[:end]
            if quote == '"':
                value = _unescape_double(value)
                if interpolate:
                    value = expand(value, {**(env or {}), **result})
        else:
            value = _strip_comment(raw)
            if interpolate:
                value = expand(value, {**(env or {}), **result})
        result[name] = value
    return result


def load(path: str | Path, *, override: bool = False, interpolate: bool = True) -> dict[str, str]:
    """Parse the file at `path` and copy its values into ``os.environ``.

    Existing environment variables win unless `override`; returns the parsed values.
    """
    values = parse(Path(path).read_text(encoding="utf-8"), interpolate=interpolate, env=os.environ)
    for name, value in values.items():
        if override or name not in os.environ:
            os.environ[name] = value
    return values
