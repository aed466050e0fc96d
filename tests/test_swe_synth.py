"""Task synthesis: mutations, pytest parsing, and end-to-end synthesis (local and Docker)."""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from mentorgym.envs.swe.builtin import prepare_repos
from mentorgym.envs.swe.synth import (
    collect_mutations,
    fix_patch,
    parse_pytest_report,
    passed,
    synthesize,
)
from mentorgym.errors import ConfigError

SAMPLE = '''
def clamp(x, lo, hi):
    """Clamp x."""
    if x < lo:
        return lo
    elif x > hi:
        return hi
    return x


def pick(items, n):
    if n > 0 and items:
        return items[0:n]
    else:
        return []


def ok(a, b):
    if a is None:
        a = 0
    return a == b or max(a, b) > 10
'''


def test_collect_mutations_covers_every_kind() -> None:
    muts = collect_mutations({"m.py": SAMPLE})
    kinds = {m.kind for m in muts}
    assert kinds >= {
        "flip_comparison", "off_by_one", "drop_branch_take_else", "drop_branch",
        "swap_arguments", "swap_bool_operator", "wrong_return",
    }  # fmt: skip
    tree = ast.dump(ast.parse(SAMPLE))
    for m in muts:
        mutated = m.apply(SAMPLE)
        assert ast.dump(ast.parse(mutated)) != tree, m
    # An `elif` is never rewritten on its own.
    assert not any(m.kind.startswith("drop_branch") and m.line == 6 for m in muts)


def test_fix_patch_reverts_the_mutation(tmp_path: Path) -> None:
    m = next(m for m in collect_mutations({"m.py": SAMPLE}) if m.kind == "flip_comparison")
    (tmp_path / "m.py").write_text(m.apply(SAMPLE))
    subprocess.run(["git", "apply", "-"], cwd=tmp_path, input=fix_patch("m.py", m.apply(SAMPLE), SAMPLE), text=True, check=True)  # fmt: skip
    assert (tmp_path / "m.py").read_text() == SAMPLE


def test_parse_pytest_report() -> None:
    out = (
        "=========================== short test summary info ============================\n"
        "PASSED tests/test_a.py::test_one\n"
        "PASSED tests/test_a.py::test_p[1-2]\n"
        "FAILED tests/test_a.py::test_two - AssertionError: assert 1 == 2\n"
        "ERROR tests/test_b.py::test_three - fixture 'x' not found\n"
        "SKIPPED [1] tests/test_b.py:3: no\n"
    )
    r = parse_pytest_report(out)
    assert r == {
        "tests/test_a.py::test_one": "PASSED",
        "tests/test_a.py::test_p[1-2]": "PASSED",
        "tests/test_a.py::test_two": "FAILED",
        "tests/test_b.py::test_three": "ERROR",
    }
    assert passed(r, "tests/test_a.py::test_one") and not passed(r, "tests/test_a.py::test_two")


def test_rejects_non_git_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="git init"):
        synthesize(tmp_path, 1, tmp_path / "out.jsonl", sandbox="local")


@pytest.fixture()
def small_repo(tmp_path: Path) -> Path:
    """A clone of the builtin intervalkit library (synthesis writes refs into the repo)."""
    src = prepare_repos(tmp_path / "cache")["intervalkit"]
    dest = tmp_path / "intervalkit"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(src), str(dest)], check=True)
    return dest


def _results(repo: Path, commit: str, patch: str, files: list[str]) -> dict[str, str]:
    data = subprocess.run(["git", "-C", str(repo), "archive", commit], capture_output=True, check=True).stdout  # fmt: skip
    work = repo.parent / f"check-{commit[:8]}-{bool(patch)}"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(work, filter="data")
    if patch:
        subprocess.run(["git", "apply", "-"], cwd=work, input=patch, text=True, check=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", *files],
        cwd=work, capture_output=True, text=True,
    )  # fmt: skip
    return parse_pytest_report(proc.stdout)


def _check_tasks(repo: Path, tasks: list[dict]) -> None:
    for t in tasks:
        assert t["FAIL_TO_PASS"] and t["test_patch"] == ""
        files = sorted({x.split("::")[0] for x in t["FAIL_TO_PASS"]})
        at_base = _results(repo, t["base_commit"], "", files)
        fixed = _results(repo, t["base_commit"], t["patch"], files)
        assert not any(passed(at_base, x) for x in t["FAIL_TO_PASS"]), t["instance_id"]
        assert all(passed(fixed, x) for x in t["FAIL_TO_PASS"]), t["instance_id"]
        assert t["FAIL_TO_PASS"][0] in t["problem_statement"]


def test_synthesize_local(small_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "tasks.jsonl"
    tasks = synthesize(small_repo, 2, out, seed=1, sandbox="local")
    assert len(tasks) == 2 and len(out.read_text().splitlines()) == 2
    assert len({t["base_commit"] for t in tasks}) == 2
    _check_tasks(small_repo, tasks)
    # The caller's checkout is untouched; the base commits are kept under refs/mentorgym/.
    status = subprocess.run(["git", "-C", str(small_repo), "status", "--porcelain"], capture_output=True, text=True)  # fmt: skip
    assert status.stdout == ""
    refs = subprocess.run(["git", "-C", str(small_repo), "for-each-ref", "refs/mentorgym"], capture_output=True, text=True)  # fmt: skip
    assert len(refs.stdout.splitlines()) == 2


@pytest.mark.docker
@pytest.mark.slow
def test_synthesize_docker(small_repo: Path, tmp_path: Path) -> None:
    from mentorgym.sandboxes.docker import DockerSandbox, engine_available

    reason = engine_available()
    if reason is not None:
        pytest.skip(reason)
    from mentorgym.sandboxes.image import build_base

    build_base()
    tasks = synthesize(small_repo, 2, tmp_path / "tasks.jsonl", seed=1)
    assert len(tasks) == 2
    for t in tasks:
        files = " ".join(sorted({x.split("::")[0] for x in t["FAIL_TO_PASS"]}))
        with DockerSandbox(t["image"], workdir="/testbed") as box:
            box.exec(f"git checkout -qf {t['base_commit']} && git clean -fdxq", 60)
            at_base = parse_pytest_report(
                box.exec(f"python3 -m pytest -rA -p no:cacheprovider {files}", 300).output
            )
            box.write_file("/tmp/fix.patch", t["patch"])
            assert box.exec("git apply /tmp/fix.patch", 60).exit_code == 0
            fixed = parse_pytest_report(
                box.exec(f"python3 -m pytest -rA -p no:cacheprovider {files}", 300).output
            )
        assert not any(passed(at_base, x) for x in t["FAIL_TO_PASS"])
        assert all(passed(fixed, x) for x in t["FAIL_TO_PASS"])
    # The env grades the synthesized tasks as before the anti-gaming checks: the gold
    # fix resolves each one, submitting nothing resolves none, and nothing is excluded.
    from mentorgym.envs.base import format_tool_call
    from mentorgym.envs.swe.env import SWEEnv

    env = SWEEnv(tasks=tasks, pool_size=1)
    try:
        for k in range(len(tasks)):
            env.reset(options={"index": k})
            _, reward, _, _, info = env.step(env.expert_action())
            assert reward == 1.0 and "excluded" not in info and "tampering" not in info, info
            env.reset(options={"index": k})
            _, reward, _, _, info = env.step(format_tool_call("submit", {}))
            assert reward == 0.0 and "tampering" not in info, info
    finally:
        env.close()
