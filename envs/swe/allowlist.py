"""What a graded patch may change: an allowlist over the working tree, compared by content.

The changed files are found by hashing every file of the agent's tree (`find` and
`git hash-object --no-filters`, run from `/` so no repository's config or index is read)
and comparing with the same listing taken of the pristine checkout before the agent's
first action. The agent's `.git` (index flags, refs, attributes) is never consulted.

**The rule.** A change is graded only when it is

- a modification of an existing regular text file inside one of the repository's
  packages (a directory under some folder with an `__init__.py` in the base commit), or of
  an existing `.py` module at the root (single-module projects), keeping its mode, or
- a new `.py` file directly inside an existing package directory, as a regular text file.

Everything else is left out and listed with its reason in `info["excluded"]`: test
files and folders, files of the task's test patch, every `conftest.py`, configuration
files (`setup.cfg`, `tox.ini`, `pytest.ini`, `pyproject.toml`, `setup.py`, `*.ini`,
`*.cfg`, `*.toml`), other files at the repository root (new ones included), dotfiles and dot folders, package
metadata (`*.dist-info`, `*.egg-info`), `*.pth` and `sitecustomize.py`, deletions,
symlinks and special files, mode changes, binary files, files over `MAX_FILE_BYTES`,
and anything inside a submodule. None of those is needed to fix a library bug, and each
is a way to change how the tests run rather than what they test.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MAX_FILE_BYTES = 2_000_000
"""A changed file larger than this is left out (no bug fix needs one; it is never cut)."""
_CONFIG_NAMES = {"setup.cfg", "tox.ini", "pytest.ini", "pyproject.toml", "setup.py", "noxfile.py"}
_CONFIG_SUFFIXES = (".ini", ".cfg", ".toml", ".pth")
_STARTUP_NAMES = {"sitecustomize.py", "usercustomize.py", "__main__.py"}
_METADATA_SUFFIXES = (".dist-info", ".egg-info", ".egg")
_TEST_DIRS = {"tests", "test"}
_SEP = b"\0\0--mentorgym-manifest--\0"


@dataclass(frozen=True)
class Entry:
    """One non-directory entry of a tree: `find`'s type letter, permission bits, git blob hash."""

    kind: str
    """`f` regular file, `l` symlink, anything else a special file."""
    mode: str
    sha: str = ""
    """The git blob hash of a regular file's bytes ('' for other kinds)."""


def manifest_command(root: str, out: str) -> str:
    """Shell that writes `root`'s listing and blob hashes to `out` (read by `parse_manifest`)."""
    r, o = shlex.quote(root), shlex.quote(out)
    find = f"find {r} -path {shlex.quote(root.rstrip('/') + '/.git')} -prune -o"
    git = "env GIT_CEILING_DIRECTORIES=/ GIT_CONFIG_NOSYSTEM=1 HOME=/nonexistent git hash-object --no-filters --"
    return (
        f"( cd / && {{ {find} ! -type d -printf '%y %m %P\\0'; printf '{_sep_printf()}'; "
        f"{find} -type f -print0 | xargs -0 -r {git}; }} > {o} )"
    )


def _sep_printf() -> str:
    return "".join(f"\\{b:03o}" for b in _SEP)


def parse_manifest(data: bytes) -> dict[str, Entry]:
    """{path: Entry} from `manifest_command`'s output; ValueError when it is inconsistent."""
    listing, sep, hashes = data.partition(_SEP)
    if not sep:
        raise ValueError("the tree listing is incomplete")
    entries: list[tuple[str, str, str]] = []
    for record in listing.split(b"\0"):
        if not record:
            continue
        kind, mode, path = record.decode("utf-8", "surrogateescape").split(" ", 2)
        entries.append((path, kind, mode))
    shas = hashes.decode().split()
    files = [e for e in entries if e[1] == "f"]
    if len(files) != len(shas):
        raise ValueError("the tree changed while it was listed")
    out = {path: Entry(kind, mode) for path, kind, mode in entries}
    for (path, kind, mode), sha in zip(files, shas, strict=True):
        out[path] = Entry(kind, mode, sha)
    return out


def blob_sha(data: bytes) -> str:
    """Git's blob hash of `data` (what `git hash-object` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def package_dirs(tree: dict[str, Entry]) -> set[str]:
    """Directories that hold an `__init__.py` (a regular file) in `tree`."""
    return {
        str(PurePosixPath(p).parent)
        for p, e in tree.items()
        if PurePosixPath(p).name == "__init__.py" and e.kind == "f"
    }


def submodules(tree: dict[str, Entry]) -> set[str]:
    """Directories with their own `.git` (submodules, nested repositories)."""
    out = set()
    for p in tree:
        parts = PurePosixPath(p).parts
        if ".git" in parts[:-1] or parts[-1] == ".git":
            out.add(str(PurePosixPath(*parts[: parts.index(".git")])))
    return out


def _name_reason(path: str, test_files: set[str]) -> str | None:
    """Why a path is never graded, from its name alone."""
    p = PurePosixPath(path)
    name, parts = p.name, p.parts
    if any(part.startswith(".") for part in parts):
        return "a dotfile or dot folder"
    if any(part.endswith(_METADATA_SUFFIXES) for part in parts):
        return "package metadata (*.dist-info, *.egg-info)"
    if path in test_files:
        return "a file the task's test patch touches"
    if name == "conftest.py":
        return "conftest.py (pytest runs it)"
    if name.startswith("test_") and name.endswith(".py") or name.endswith("_test.py"):
        return "a test file"
    if any(part in _TEST_DIRS for part in parts[:-1]):
        return "a file under a tests folder"
    if name in _CONFIG_NAMES or name.endswith(_CONFIG_SUFFIXES):
        return "a configuration file"
    if name in _STARTUP_NAMES:
        return "runs at interpreter start or as a program"
    if "__pycache__" in parts or name.endswith((".pyc", ".pyo", ".so", ".pyd", ".dll")):
        return "compiled code"
    return None


def exclusion_reason(
    path: str,
    old: Entry | None,
    new: Entry | None,
    pristine: dict[str, Entry],
    test_files: set[str],
    packages: set[str] | None = None,
) -> str | None:
    """Why the change of `path` (old -> new entry, None = absent) is left out, or None."""
    packages = package_dirs(pristine) if packages is None else packages
    reason = _name_reason(path, test_files)
    if reason is not None:
        return reason
    root_module = "/" not in path and path.endswith(".py") and old is not None
    if "/" not in path and not root_module:
        return "a file at the repository root"
    if any(path.startswith(s + "/") for s in submodules(pristine) if s != "."):
        return "inside a submodule"
    parent = str(PurePosixPath(path).parent)
    if new is None:
        return "a deletion (only modifications and new modules are graded)"
    if new.kind != "f" or (old is not None and old.kind != "f"):
        return "a symlink or special file"
    if old is None:
        if not path.endswith(".py") or parent not in packages:
            return "a new file that is not a .py module in an existing package folder"
        return None
    if old.mode != new.mode and old.sha == new.sha:
        return "a mode change"
    if not root_module and not any(parent == d or parent.startswith(d + "/") for d in packages):
        return "not in one of the repository's packages"
    return None


def content_reason(data: bytes) -> str | None:
    """Why a changed file's bytes are left out (binary, too large), or None."""
    if len(data) > MAX_FILE_BYTES:
        return f"larger than {MAX_FILE_BYTES} bytes"
    if b"\0" in data:
        return "a binary file"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "a binary file (not UTF-8 text)"
    return None


def changed(
    pristine: dict[str, Entry], current: dict[str, Entry]
) -> list[tuple[str, Entry | None, Entry | None]]:
    """(path, old, new) for each path whose entry differs, sorted."""
    paths = sorted(set(pristine) | set(current))
    return [
        (p, pristine.get(p), current.get(p)) for p in paths if pristine.get(p) != current.get(p)
    ]


def select(
    pristine: dict[str, Entry], current: dict[str, Entry], test_files: set[str]
) -> tuple[list[str], dict[str, str]]:
    """(paths whose content is graded, {left-out path: reason}) by the rule above."""
    packages = package_dirs(pristine)
    allowed: list[str] = []
    excluded: dict[str, str] = {}
    for path, old, new in changed(pristine, current):
        reason = exclusion_reason(path, old, new, pristine, test_files, packages)
        if reason is None and old is not None and new is not None and old.sha == new.sha:
            continue  # content unchanged (a mode change of a file it also did not edit)
        if reason is None:
            allowed.append(path)
        else:
            excluded[path] = reason
    return allowed, excluded


def make_patch(files: dict[str, tuple[bytes | None, bytes]]) -> str:
    """A git diff (as `git diff` prints it) of {path: (original or None, new bytes)}.

    Built on the host with `git diff --no-index` between two scratch trees, so the patch
    is a function of the graded bytes alone.
    """
    if not files:
        return ""
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("a", "b"):
            (Path(tmp) / side).mkdir()
        for path, (old, new) in files.items():
            for side, data in (("a", old), ("b", new)):
                if data is None:
                    continue
                target = Path(tmp) / side / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        proc = subprocess.run(
            ["git", "-c", "core.quotepath=false", "diff", "--no-index", "--no-prefix",
             "--no-color", "--no-ext-diff", "--no-renames", "--binary", "a", "b"],
            cwd=tmp, capture_output=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, "GIT_CONFIG_NOSYSTEM": "1"},
        )  # fmt: skip
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"git diff failed: {proc.stderr.decode(errors='replace').strip()}")
    out = proc.stdout.decode("utf-8", "replace")
    # a new file's header reads `diff --git b/p b/p` under --no-index; git apply wants a/p
    lines = [
        "diff --git a/" + line[len("diff --git b/") :] if line.startswith("diff --git b/") else line
        for line in out.split("\n")
    ]
    return "\n".join(lines)
