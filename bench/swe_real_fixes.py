"""False refusals of the SWE grader's static policy on real fixes: upstream fix commits.

    python bench/swe_real_fixes.py REPO [--grep fix] [--limit 300]

REPO is a git clone of a project (SWE-bench's repositories are such projects; their gold
patches are commits of this kind). For each non-merge commit whose subject matches
`--grep`, the parent's tree stands for the pristine checkout and the commit's for the
agent's, listed as `allowlist.parse_manifest` lists a tree (blob hashes, modes, symlinks),
and the grader's two static decisions are applied: the allowlist (`allowlist.select`, with
the commit's test files standing in for the task's test patch) and the capability check of
each kept `.py` file (`capabilities.review`, old and new contents). Counted:

  refused      a capability finding: the grader would give the fix 0
  dropped      a source `.py` file outside tests the allowlist leaves out (deleted,
               moved, new in a new folder, at the root): the fix is graded without it
  clean        neither

Tests and documentation left out are not counted (a SWE-bench task's tests come from its
test patch; docs do not change a verdict). Prints the counts and each refused or dropped
commit with the reasons.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import PurePosixPath

from mentorgym.envs.swe.allowlist import Entry, select
from mentorgym.envs.swe.capabilities import review

_KIND = {"100644": ("f", "644"), "100755": ("f", "755"), "120000": ("l", "777")}


def git(repo: str, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", repo, *args], capture_output=True, check=True
    ).stdout.decode("utf-8", "replace")


def tree(repo: str, commit: str) -> dict[str, Entry]:
    """A commit's tree as a manifest (a gitlink becomes a `path/.git` entry, as on disk)."""
    out: dict[str, Entry] = {}
    for record in git(repo, "ls-tree", "-r", "-z", commit).split("\0"):
        if not record:
            continue
        meta, path = record.split("\t", 1)
        mode, _kind, sha = meta.split()
        if mode == "160000":
            out[f"{path}/.git"] = Entry("f", "644", sha)
        else:
            kind, perm = _KIND.get(mode, ("o", "0"))
            out[path] = Entry(kind, perm, sha if kind == "f" else "")
    return out


def _is_test(path: str) -> bool:
    p = PurePosixPath(path)
    return any(part in ("tests", "test", "testing") for part in p.parts) or p.name.startswith(
        ("test_", "conftest")
    )


def judge(repo: str, commit: str) -> tuple[list[str], list[str]]:
    """(capability findings, source files left out) for one commit against its parent."""
    parent = f"{commit}^"
    before, after = tree(repo, parent), tree(repo, commit)
    tests = {p for p in set(before) | set(after) if _is_test(p)}
    allowed, excluded = select(before, after, tests)
    dropped = [
        f"{p}: {why}"
        for p, why in excluded.items()
        if p.endswith(".py") and not _is_test(p) and not p.startswith(("docs/", "doc/"))
    ]
    findings: list[str] = []
    for path in allowed:
        if not path.endswith(".py"):
            continue
        old = git(repo, "show", f"{parent}:{path}") if path in before else None
        findings += review(path, old, git(repo, "show", f"{commit}:{path}"))
    return findings, dropped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("repo")
    ap.add_argument("--grep", default="fix")
    ap.add_argument("--limit", type=int, default=300)
    args = ap.parse_args()
    commits = git(
        args.repo, "log", "--no-merges", "-i", f"--grep={args.grep}", "--format=%H %s",
        f"-n{args.limit}",
    ).splitlines()  # fmt: skip
    refused = dropped = clean = 0
    for line in commits:
        sha, subject = line.split(" ", 1)
        findings, left_out = judge(args.repo, sha)
        if findings:
            refused += 1
            print(f"REFUSED {sha[:10]} {subject[:60]}\n    " + "\n    ".join(findings[:3]))
        elif left_out:
            dropped += 1
            print(f"DROPPED {sha[:10]} {subject[:60]}\n    " + "\n    ".join(left_out[:3]))
        else:
            clean += 1
    n = len(commits)
    print(f"{n} fix commits: refused {refused}, source dropped {dropped}, clean {clean}")


if __name__ == "__main__":
    main()
