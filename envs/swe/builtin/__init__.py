"""The SWE task set mentorgym ships: small pure-Python libraries with real bugs and real tests.

The libraries' clean sources live in ``data/<lib>/``; ``bugs.py`` says how each task's
``base_commit`` differs from the clean library. A git repository cannot be shipped inside
ours, so `prepare_repos()` materializes each library as a git repository in a cache directory
with fixed commit metadata: the same sources always give the same commit hashes, which is what
lets ``tasks.jsonl`` name them.

Repository layout (per library): branch ``main`` holds one commit, the clean library; each
task has a branch ``task/<instance_id>`` holding one *parentless* commit, the buggy tree, so
``git log`` at a task's base shows no diff that gives the bug away.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from mentorgym.envs.swe.builtin.bugs import BUGS, Bug

DATA_DIR = Path(__file__).parent / "data"
TASKS_PATH = Path(__file__).parent / "tasks.jsonl"
_LAYOUT_VERSION = "1"
"""Bump when the way repos are built changes, so old caches are not reused."""
_DONE_MARKER = "mentorgym-complete"
_COMMIT_DATE = "2024-01-01T00:00:00+0000"
_IGNORED_PARTS = {"__pycache__", ".pytest_cache"}

GIT_ENV = {
    "GIT_AUTHOR_NAME": "mentorgym",
    "GIT_AUTHOR_EMAIL": "builtin@mentorgym.invalid",
    "GIT_AUTHOR_DATE": _COMMIT_DATE,
    "GIT_COMMITTER_NAME": "mentorgym",
    "GIT_COMMITTER_EMAIL": "builtin@mentorgym.invalid",
    "GIT_COMMITTER_DATE": _COMMIT_DATE,
    # The user's own git config (hooks, signing, autocrlf, templates) must not change hashes.
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}
"""Environment for git commands whose commits must hash the same on every machine."""


def git(repo: Path, *args: str, input_text: str | None = None) -> str:
    """Run ``git -C repo ARGS`` with deterministic settings; return stdout, raise on failure."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "-c", "core.autocrlf=false", "-c", "commit.gpgsign=false", *args],
        env={**os.environ, **GIT_ENV},
        input=input_text,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip()}")
    return proc.stdout


def library_names() -> list[str]:
    """The shipped libraries (folders under data/), sorted."""
    return sorted(p.name for p in DATA_DIR.iterdir() if p.is_dir() and not p.name.startswith("."))


def library_files(lib: str) -> dict[str, bytes]:
    """Relative path -> content of every file of the clean library, in sorted order."""
    root = DATA_DIR / lib
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not _IGNORED_PARTS.intersection(rel.parts) and path.suffix != ".pyc":
            files[rel.as_posix()] = path.read_bytes()
    return files


def bugs_for(lib: str) -> list[Bug]:
    return [b for b in BUGS if b.lib == lib]


def content_hash(lib: str) -> str:
    """A short hash of everything that determines the library's repository."""
    h = hashlib.sha256(_LAYOUT_VERSION.encode())
    for rel, data in library_files(lib).items():
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    for bug in bugs_for(lib):
        h.update(repr((bug.instance_id, bug.file, bug.fixed, bug.buggy)).encode())
    return h.hexdigest()[:12]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mentorgym" / "swe" / "builtin"


def apply_bug(source: str, bug: Bug) -> str:
    """The buggy version of `source`; raises when the snippet is not there exactly once."""
    count = source.count(bug.fixed)
    if count != 1:
        raise ValueError(
            f"{bug.instance_id}: the `fixed` snippet occurs {count} times in {bug.file}, "
            "expected exactly once; edit bugs.py so the snippet is unique"
        )
    return source.replace(bug.fixed, bug.buggy)


def _build_repo(lib: str, dest: Path) -> None:
    files = library_files(lib)
    dest.mkdir(parents=True)
    git(dest, "init", "-q", "--object-format=sha1")
    git(dest, "symbolic-ref", "HEAD", "refs/heads/main")
    for rel, data in files.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    # Modes come from the index, not the checkout: force 100644 so hashes do not depend on umask.
    git(dest, "add", "-A")
    git(dest, "update-index", "--chmod=-x", *files)
    git(dest, "commit", "-q", "-m", f"{lib}: initial import")
    for bug in bugs_for(lib):
        path = dest / bug.file
        clean = path.read_text()
        path.write_text(apply_bug(clean, bug))
        git(dest, "add", bug.file)
        tree = git(dest, "write-tree").strip()
        commit = git(dest, "commit-tree", tree, "-m", f"{lib} snapshot").strip()
        git(dest, "branch", f"task/{bug.instance_id}", commit)
        git(dest, "checkout", "-qf", "main")
    (dest / ".git" / _DONE_MARKER).write_text(content_hash(lib))


def prepare_repos(cache_dir: Path | None = None) -> dict[str, Path]:
    """Materialize every shipped library as a git repository; return library name -> repo path.

    Repositories live in ``<cache_dir>/<lib>-<contenthash>/`` (default
    ``~/.cache/mentorgym/swe/builtin``) and are reused while the shipped sources are unchanged.
    Building is atomic (a temporary sibling renamed into place), so concurrent callers are safe.
    """
    root = cache_dir or default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    repos: dict[str, Path] = {}
    for lib in library_names():
        dest = root / f"{lib}-{content_hash(lib)}"
        if not (dest / ".git" / _DONE_MARKER).exists():
            tmp = Path(tempfile.mkdtemp(prefix=f".{lib}-", dir=root))
            try:
                _build_repo(lib, tmp / "repo")
                try:
                    (tmp / "repo").rename(dest)
                except OSError:
                    # Another process won the race; its repo is identical to ours.
                    if not (dest / ".git" / _DONE_MARKER).exists():
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        repos[lib] = dest
    return repos


__all__ = ["BUGS", "Bug", "DATA_DIR", "TASKS_PATH", "prepare_repos"]
