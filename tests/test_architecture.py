"""The map in docs/architecture.md, checked against the code.

- Imports point down: mentorgym/ (the application) > training/ > agents/ > envs/ >
  sandboxes/. Every import is read with `ast`, module level or inside a function, so a
  deferred import cannot hide an upward arrow. `mentorgym.errors` and the package root
  (`make`, `register`) are shared by all floors.
- No function in these folders is longer than 80 lines; a failure lists every one with its
  file, line and length.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ["sandboxes", "envs", "agents", "training", "mentorgym"]
"""Low to high: a folder may import its own floor and those below it."""
SHARED = {"mentorgym", "mentorgym.errors", "mentorgym.make", "mentorgym.register"}
"""What every floor may import from the top folder."""
MAX_FUNCTION_LINES = 80


def source_files(folder: str) -> list[Path]:
    # envs/swe/builtin/data holds toy repositories that the SWE env copies into sandboxes:
    # data, not mentorgym's code.
    return [p for p in sorted((ROOT / folder).rglob("*.py")) if "builtin/data" not in p.as_posix()]


def floor_of(module: str) -> str | None:
    """The folder a `mentorgym...` module lives in (None for other packages)."""
    parts = module.split(".")
    if parts[0] != "mentorgym":
        return None
    if len(parts) > 1 and parts[1] in FLOORS[:-1]:
        return parts[1]
    return "mentorgym"


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every absolute import; `from mentorgym import x` counts as
    `mentorgym.x` (x may be a module of the top folder)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mentorgym":
                found += [(node.lineno, f"mentorgym.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def upward_imports(folder: str, source: str, name: str) -> list[str]:
    """The imports of one file of `folder` that point up the stack."""
    own = FLOORS.index(folder)
    bad = []
    for line, module in imported_modules(ast.parse(source)):
        target = floor_of(module)
        if target is None or module in SHARED:
            continue
        if FLOORS.index(target) > own:
            bad.append(f"{name}:{line} imports {module} ({folder}/ may not import {target}/)")
    return bad


def long_functions(source: str, name: str) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                out.append(f"{name}:{node.lineno} {node.name} is {length} lines")
    return out


@pytest.mark.parametrize("folder", FLOORS)
def test_imports_point_down(folder):
    bad = []
    for path in source_files(folder):
        bad += upward_imports(folder, path.read_text(), str(path.relative_to(ROOT)))
    assert not bad, "imports against the arrows of docs/architecture.md:\n" + "\n".join(bad)


def test_the_import_check_catches_an_upward_arrow():
    """The check itself can fail: a deferred import from envs/ into training/ is caught, and
    what the map allows is not."""
    source = (
        "import os\n"
        "from mentorgym.errors import ConfigError\n"
        "from mentorgym import make\n"
        "from mentorgym.sandboxes.base import Sandbox\n"
        "def f():\n"
        "    from mentorgym.training.trainer import optimizer_step\n"
        "    import mentorgym.cli\n"
        "    from mentorgym import rollout\n"
    )
    bad = upward_imports("envs", source, "envs/x.py")
    assert bad == [
        "envs/x.py:6 imports mentorgym.training.trainer (envs/ may not import training/)",
        "envs/x.py:7 imports mentorgym.cli (envs/ may not import mentorgym/)",
        "envs/x.py:8 imports mentorgym.rollout (envs/ may not import mentorgym/)",
    ]
    assert upward_imports("mentorgym", source, "mentorgym/x.py") == []


def test_no_function_over_80_lines():
    bad = []
    for folder in FLOORS:
        for path in source_files(folder):
            bad += long_functions(path.read_text(), str(path.relative_to(ROOT)))
    assert not bad, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(bad)


def test_the_length_check_counts_lines():
    body = "".join(f"    x{i} = {i}\n" for i in range(80))
    assert long_functions("def short():\n" + body[: -len("    x79 = 79\n")], "a.py") == []
    assert long_functions("def long():\n" + body, "a.py") == ["a.py:1 long is 81 lines"]


def test_the_map_names_what_exists():
    """Every path docs/architecture.md names in its tables exists."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    words = [
        w.strip("`.,;:()")
        for line in text.splitlines()
        if line.startswith("|")
        for w in line.split()
    ]
    named = {w for w in words if "/" in w and w.endswith(".py") and "<" not in w}
    missing = [p for p in sorted(named) if not (ROOT / p).exists()]
    assert named and not missing, missing
