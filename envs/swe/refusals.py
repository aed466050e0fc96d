"""Refused patches counted by reason, so a run where the policy starts probing the grader shows.

`refusal_counts(infos)` reads the final `info` of each episode (the SWE env's `excluded`
and `tampering` keys; any other env's info counts nothing) and returns
`{"reward_refusals/<reason>": episodes}`: one count per episode and reason. Reasons:

- `excluded/<rule>`: a file the allowlist left out (`allowlist.py`), e.g. `excluded/conftest`;
- `static/<capability>` and `run_time/<capability>`: a capability the graded files added,
  seen by the AST check or by the audit hook (`capabilities.py`);
- `record/<what>`: the supervised test record contradicts the log or was broken (`guard.py`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from mentorgym.envs.swe.capabilities import CAPABILITIES

PREFIX = "reward_refusals/"
_EXCLUDED_RULES = (
    ("test patch", "test_patch"), ("conftest", "conftest"), ("test", "tests"),
    ("root", "root_file"), ("dot", "dotfile"), ("metadata", "metadata"),
    ("configuration", "config"), ("interpreter start", "startup"), ("compiled", "compiled"),
    ("submodule", "submodule"), ("deletion", "deletion"), ("symlink", "symlink"),
    ("new file", "new_file"), ("mode", "mode_change"), ("packages", "outside_packages"),
    ("binary", "binary"), ("larger", "too_large"), ("objects", "git_objects"),
    ("could not be read", "unreadable_tree"), ("changed while", "unreadable_tree"),
)  # fmt: skip
_RECORD_RULES = (
    ("does not show", "log_contradicted"), ("did not write", "injected"),
    ("out of sequence", "injected"), ("before its session finished", "died_early"),
    ("no record", "no_record"), ("never reported", "never_ran"), ("partial", "injected"),
)  # fmt: skip


def _rule(text: str, rules: tuple[tuple[str, str], ...], default: str) -> str:
    return next((code for needle, code in rules if needle in text), default)


def _capability(text: str) -> str:
    return next((name for name, what in CAPABILITIES.items() if what in text), "other")


def reasons(info: dict[str, Any]) -> set[str]:
    """The refusal reasons of one episode's final info."""
    out = set()
    for why in (info.get("excluded") or {}).values():
        out.add("excluded/" + _rule(str(why), _EXCLUDED_RULES, "other"))
    for text in info.get("tampering") or []:
        text = str(text)
        if text.startswith("static check:"):
            out.add("static/" + _capability(text))
        elif text.startswith("run time:"):
            out.add("run_time/" + _capability(text))
        else:
            out.add("record/" + _rule(text, _RECORD_RULES, "other"))
    return out


def refusal_counts(infos: Iterable[dict[str, Any]]) -> dict[str, int]:
    """`{"reward_refusals/<reason>": number of episodes}` over the episodes' final infos."""
    counts: Counter[str] = Counter()
    for info in infos:
        counts.update(reasons(info or {}))
    return {PREFIX + re.sub(r"[^a-z0-9_/]", "_", k): v for k, v in sorted(counts.items())}
