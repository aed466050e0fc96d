"""The shipped SWE task set: hashes reproduce, and every task validates with real local runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mentorgym.envs.swe.builtin import BUGS, apply_bug, git, prepare_repos
from mentorgym.envs.swe.builtin.bugs import Bug
from mentorgym.envs.swe.builtin.build import check_task, load_shipped, make_test_patch

REQUIRED = [
    "instance_id", "repo", "base_commit", "patch", "test_patch", "FAIL_TO_PASS", "PASS_TO_PASS",
    "problem_statement", "version", "created_at", "environment_setup_commit", "repo_dir",
]  # fmt: skip


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return prepare_repos(tmp_path_factory.mktemp("builtin-cache"))


@pytest.fixture(scope="module")
def tasks() -> list[dict]:
    return load_shipped()


def test_task_set_shape(tasks: list[dict]) -> None:
    assert len(tasks) >= 12
    assert len({t["repo_dir"] for t in tasks}) >= 3
    assert len({t["instance_id"] for t in tasks}) == len(tasks)
    for t in tasks:
        assert all(k in t for k in REQUIRED), t["instance_id"]
        assert t["FAIL_TO_PASS"] and t["PASS_TO_PASS"]
        assert not set(t["FAIL_TO_PASS"]) & set(t["PASS_TO_PASS"])
        assert t["patch"].startswith("diff --git") and t["test_patch"].startswith("diff --git")


def test_hashes_match_prepare_repos(repos: dict[str, Path], tasks: list[dict]) -> None:
    for t in tasks:
        repo = repos[t["repo_dir"]]
        bug_id = t["instance_id"].split("__", 1)[1]
        assert git(repo, "rev-parse", f"task/{bug_id}").strip() == t["base_commit"]
        assert git(repo, "rev-parse", "main").strip() == t["environment_setup_commit"]
        # The gold patch is the exact reverse of the bug; the test patch is what bugs.py says.
        assert git(repo, "diff", t["base_commit"], "main") == t["patch"]
        bug = next(b for b in BUGS if b.instance_id == bug_id)
        assert make_test_patch(bug, repo) == t["test_patch"]


def test_prepare_repos_is_deterministic_and_cached(repos: dict[str, Path], tmp_path: Path) -> None:
    again = prepare_repos(tmp_path)
    assert {k: v.name for k, v in again.items()} == {k: v.name for k, v in repos.items()}
    for lib, path in again.items():
        assert git(path, "show-ref") == git(repos[lib], "show-ref")
        assert git(path, "status", "--porcelain") == ""
    # A second call reuses the cached repository instead of rebuilding it.
    marker = next(iter(again.values())) / "untouched"
    marker.write_text("x")
    assert prepare_repos(tmp_path) == again and marker.exists()


def test_base_commit_history_does_not_show_the_fix(
    repos: dict[str, Path], tasks: list[dict]
) -> None:
    t = tasks[0]
    log = git(repos[t["repo_dir"]], "log", "--format=%H", t["base_commit"]).split()
    assert log == [t["base_commit"]]


def test_apply_bug_requires_unique_snippet() -> None:
    bug = Bug("x-1", "x", "f.py", "a = 1\n", "a = 2\n", "t.py", "", "", "")
    assert apply_bug("a = 1\nb = 2\n", bug) == "a = 2\nb = 2\n"
    with pytest.raises(ValueError, match="occurs 2 times"):
        apply_bug("a = 1\na = 1\n", bug)


def test_one_task_validates_locally(repos: dict[str, Path], tasks: list[dict]) -> None:
    t = next(t for t in tasks if t["repo_dir"] == "dotenvkit")
    assert check_task(t, repos[t["repo_dir"]]) == []


def test_validation_catches_a_mislabeled_task(repos: dict[str, Path], tasks: list[dict]) -> None:
    t = tasks[0]
    bad = {**t, "PASS_TO_PASS": t["PASS_TO_PASS"] + t["FAIL_TO_PASS"], "patch": ""}
    problems = check_task({**bad, "patch": t["patch"]}, repos[t["repo_dir"]])
    assert any("fails at base" in p for p in problems)


@pytest.mark.slow
def test_every_task_validates_locally(repos: dict[str, Path], tasks: list[dict]) -> None:
    problems = [p for t in tasks for p in check_task(t, repos[t["repo_dir"]])]
    assert problems == []


def test_shipped_library_tests_pass_on_clean_sources(repos: dict[str, Path]) -> None:
    for lib, repo in repos.items():
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--co"],
            cwd=repo,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout[-2000:]
        assert int(proc.stdout.strip().splitlines()[-1].split()[0].split("/")[0]) >= 20, lib
