"""Regenerate ``tasks.jsonl`` from the shipped libraries and ``bugs.py``, validating every task.

    python -m mentorgym.envs.swe.builtin.build            # rewrite tasks.jsonl
    python -m mentorgym.envs.swe.builtin.build --check    # validate the shipped file, write nothing

Validation runs locally, without Docker: the base commit is exported to a temporary directory,
the test patch applied, and ``python -m pytest`` run there; FAIL_TO_PASS must fail and
PASS_TO_PASS pass; with the gold patch applied too, all of them must pass.
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from mentorgym.envs.swe.builtin import BUGS, TASKS_PATH, Bug, git, prepare_repos
from mentorgym.envs.swe.synth import parse_pytest_report, passed


def make_test_patch(bug: Bug, repo: Path) -> str:
    """The diff that appends the bug's hidden tests to its test file."""
    old = git(repo, "show", f"main:{bug.test_file}")
    if not old.endswith("\n"):
        old += "\n"
    new = old + bug.tests.rstrip("\n").lstrip("\n").join(["\n\n", "\n"])
    diff = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"a/{bug.test_file}",
        tofile=f"b/{bug.test_file}",
    )
    return f"diff --git a/{bug.test_file} b/{bug.test_file}\n" + "".join(diff)


def _export(repo: Path, commit: str, dest: Path) -> None:
    data = subprocess.run(
        ["git", "-C", str(repo), "archive", commit], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(dest, filter="data")


def _apply(workdir: Path, patch: str) -> None:
    proc = subprocess.run(
        ["git", "apply", "-"], cwd=workdir, input=patch, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"patch does not apply in {workdir}: {proc.stderr.strip()}")


def _pytest(workdir: Path, files: list[str]) -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", *files],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    return parse_pytest_report(proc.stdout + proc.stderr)


def run_task(task: dict, repo: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Test results (node id -> status) at base + test_patch, and with the gold patch as well."""
    files = sorted({t.split("::")[0] for t in task["FAIL_TO_PASS"] + task["PASS_TO_PASS"]})
    with tempfile.TemporaryDirectory(prefix="mentorgym-builtin-") as tmp:
        work = Path(tmp)
        _export(repo, task["base_commit"], work)
        _apply(work, task["test_patch"])
        at_base = _pytest(work, files or ["tests"])
        _apply(work, task["patch"])
        with_gold = _pytest(work, files or ["tests"])
    return at_base, with_gold


def check_task(task: dict, repo: Path) -> list[str]:
    """Problems with `task` (empty when it is valid), from real local runs."""
    at_base, with_gold = run_task(task, repo)
    problems = [f"{t} passes at base" for t in task["FAIL_TO_PASS"] if passed(at_base, t)]
    problems += [f"{t} fails at base" for t in task["PASS_TO_PASS"] if not passed(at_base, t)]
    problems += [
        f"{t} fails with the gold patch"
        for t in task["FAIL_TO_PASS"] + task["PASS_TO_PASS"]
        if not passed(with_gold, t)
    ]
    if not task["FAIL_TO_PASS"]:
        problems.append("FAIL_TO_PASS is empty")
    return [f"{task['instance_id']}: {p}" for p in problems]


def make_task(bug: Bug, repo: Path) -> dict:
    """The task dict for `bug`, with FAIL_TO_PASS and PASS_TO_PASS measured by running pytest."""
    base = git(repo, "rev-parse", f"task/{bug.instance_id}").strip()
    main = git(repo, "rev-parse", "main").strip()
    task = {
        "instance_id": f"mentorgym__{bug.instance_id}",
        "repo": f"mentorgym-builtin/{bug.lib}",
        "base_commit": base,
        "patch": git(repo, "diff", base, main),
        "test_patch": make_test_patch(bug, repo),
        "FAIL_TO_PASS": [],
        "PASS_TO_PASS": [],
        "problem_statement": bug.problem_statement,
        "version": "0.1",
        "created_at": bug.created_at,
        "hints_text": "",
        "environment_setup_commit": main,
        "repo_dir": bug.lib,
    }
    at_base, with_gold = run_task({**task, "FAIL_TO_PASS": [], "PASS_TO_PASS": []}, repo)
    task["FAIL_TO_PASS"] = sorted(
        t for t in with_gold if passed(with_gold, t) and not passed(at_base, t)
    )
    task["PASS_TO_PASS"] = sorted(
        t for t in with_gold if passed(with_gold, t) and passed(at_base, t)
    )
    broken = sorted(t for t in with_gold if not passed(with_gold, t))
    if broken or not task["FAIL_TO_PASS"]:
        raise RuntimeError(
            f"{bug.instance_id}: invalid task (fails with the gold patch: {broken}; "
            f"FAIL_TO_PASS: {task['FAIL_TO_PASS']}); fix bugs.py"
        )
    return task


def load_shipped(path: Path = TASKS_PATH) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="validate tasks.jsonl, write nothing")
    ap.add_argument("--out", type=Path, default=TASKS_PATH)
    args = ap.parse_args(argv)
    repos = prepare_repos()
    if args.check:
        problems: list[str] = []
        for task in load_shipped(args.out):
            problems += check_task(task, repos[task["repo_dir"]])
        print("\n".join(problems) or f"all {len(load_shipped(args.out))} tasks valid")
        return 1 if problems else 0
    tasks = [make_task(bug, repos[bug.lib]) for bug in BUGS]
    with args.out.open("w") as f:
        for task in tasks:
            f.write(json.dumps(task, sort_keys=True) + "\n")
    for t in tasks:
        print(
            f"{t['instance_id']}: {len(t['FAIL_TO_PASS'])} FAIL_TO_PASS, {len(t['PASS_TO_PASS'])} PASS_TO_PASS"
        )
    print(f"wrote {len(tasks)} tasks to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
