"""``${VAR}``, ``${VAR:-default}`` and ``$VAR`` expansion, the way POSIX shells do it."""

from __future__ import annotations

import re
from collections.abc import Mapping

_VAR_RE = re.compile(
    r"\\\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)"
)


def expand(value: str, env: Mapping[str, str]) -> str:
    """Expand variables in `value` from `env`; an unknown variable becomes "" (as in sh).

    ``${VAR:-word}`` uses `word` when VAR is unset *or empty*; ``${VAR-word}`` only when unset.
    ``\\$`` is a literal dollar sign.
    """

    def replace(m: re.Match[str]) -> str:
        if m.group(0) == "\\$":
            return "$"
        name = m.group(1) or m.group(4)
        op, default = m.group(2), m.group(3)
        current = env.get(name)
        if op == ":-" and not current:
            return expand(default, env)
        if op == "-" and current is None:
            return expand(default, env)
        return current or ""

    return _VAR_RE.sub(replace, value)
