"""One loader for SWE-bench, SWE-Gym and SWE-smith instances; image names; `mentorgym swe check/grade`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from swe_logs import pytest_verbose, swebench_log, swesmith_log

from mentorgym.cli import main
from mentorgym.envs.swe.tasks import (
    image_hint,
    image_name,
    load_tasks,
    normalize_task,
    read_instance,
)
from mentorgym.errors import ConfigError, SandboxError

SWE_GYM_FILE = Path(__file__).parent / "data" / "swe_gym" / "instances.jsonl"

SWESMITH_ROW = {
    "instance_id": "pandas-dev__pandas.95280573.pr_53652",
    "repo": "swesmith/pandas-dev__pandas.95280573",
    "patch": "diff --git a/pandas/a.py b/pandas/a.py\n--- a/pandas/a.py\n+++ b/pandas/a.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n",
    "FAIL_TO_PASS": ["pandas/tests/test_a.py::test_x"],
    "PASS_TO_PASS": ["pandas/tests/test_a.py::test_y"],
    "created_at": "2025-03-13T00:00:00",
    "image_name": "jyangballin/swesmith.x86_64.pandas-dev_1776_pandas.95280573",
    "problem_statement": "x is wrong",
}


def test_image_names_as_each_project_names_them() -> None:
    gym = normalize_task(
        {
            "instance_id": "getmoto__moto-7365",
            "repo": "getmoto/moto",
            "base_commit": "a",
            "FAIL_TO_PASS": [],
            "PASS_TO_PASS": [],
        }  # fmt: skip
    )
    assert gym["task_kind"] == "swegym"
    assert image_name(gym) == "xingyaoww/sweb.eval.x86_64.getmoto_s_moto-7365:latest"
    bench = normalize_task(
        {
            "instance_id": "django__django-11099",
            "repo": "django/django",
            "base_commit": "a",
            "FAIL_TO_PASS": "[]",
            "PASS_TO_PASS": "[]",
        }  # fmt: skip
    )
    assert bench["task_kind"] == "swebench"
    assert image_name(bench) == "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
    assert "run_evaluation" in image_hint(bench) and "docker pull" in image_hint(bench)
    smith = normalize_task(SWESMITH_ROW)
    assert image_name(smith) == SWESMITH_ROW["image_name"] + ":latest"
    assert image_name({**smith, "image": "mine:1"}) == "mine:1"


def test_swesmith_instances_are_inverted() -> None:
    smith = normalize_task(SWESMITH_ROW)
    assert smith["task_kind"] == "swesmith" and smith["harness"] == "swesmith"
    assert smith["bug_patch"] == SWESMITH_ROW["patch"] and smith["patch"] == ""
    assert smith["bug_branch"] == SWESMITH_ROW["instance_id"]
    with pytest.raises(ConfigError, match=r"swesmith task .* lacks \['patch'\]"):
        normalize_task({k: v for k, v in SWESMITH_ROW.items() if k != "patch"})


def test_swe_gym_file_loads_with_json_string_and_list_test_ids() -> None:
    tasks = load_tasks(str(SWE_GYM_FILE))
    assert [t["task_kind"] for t in tasks] == ["swegym"] * 3
    mypy = next(t for t in tasks if t["repo"] == "python/mypy")
    assert mypy["FAIL_TO_PASS"] == [
        "mypy/test/testcheck.py::TypeCheckSuite::check-classes.test::testProtocolNotCallableNote"
    ]


def test_missing_image_error_names_the_image_and_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mentorgym.envs.swe import tasks as tasks_mod
    from mentorgym.sandboxes import image as image_api

    monkeypatch.setattr(image_api, "image_exists", lambda name: False)
    task = load_tasks(str(SWE_GYM_FILE))[0]
    with pytest.raises(SandboxError) as err:
        tasks_mod.ensure_image(task)
    msg = str(err.value)
    assert "xingyaoww/sweb.eval.x86_64.getmoto_s_moto-7365:latest" in msg
    assert "docker pull xingyaoww/sweb.eval.x86_64.getmoto_s_moto-7365:latest" in msg


def test_swe_check_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from mentorgym.sandboxes import image as image_api

    monkeypatch.setattr(image_api, "image_exists", lambda name: "mypy" in name)
    assert main(["swe", "check", str(SWE_GYM_FILE)]) == 2  # two images missing
    out = capsys.readouterr()
    assert "3 task(s)" in out.out and out.out.count("MISSING") == 2 and "present" in out.out
    assert "2 image(s) missing" in out.err
    assert main(["swe", "check", str(SWE_GYM_FILE), "--no-images"]) == 0


def test_swe_grade_cli_prints_verdict_and_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inst = tmp_path / "inst.json"
    inst.write_text(json.dumps(SWESMITH_ROW))
    log = tmp_path / "run.log"
    log.write_text(swesmith_log(pytest_verbose({"pandas/tests/test_a.py::test_x": "PASSED", "pandas/tests/test_a.py::test_y": "PASSED"})))  # fmt: skip
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"patch_successfully_applied": False, "resolved": True}))
    assert main(["swe", "grade", str(log), "--instance", str(inst), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "RESOLVED (rules: swesmith)" in out
    assert "FAIL_TO_PASS  PASSED" in out and "this grade agrees" in out
    # the same log graded by 5.x rules from a SWE-Gym file with --id
    log.write_text(swebench_log(pytest_verbose({"tests/x.py::t": "FAILED"}), exit_code=1))
    assert main(["swe", "grade", str(log), "--instance", str(SWE_GYM_FILE), "--id", "dask__dask-10042", "--harness", "swebench"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "NOT RESOLVED (rules: swebench)" in out and "MISSING" in out
    assert main(["swe", "grade", str(log), "--instance", str(SWE_GYM_FILE)]) == 2  # 3 rows, no --id


def test_read_instance_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_instance(str(tmp_path / "none.json"))


# --- a SWE-smith-style task in Docker: the bug is applied, the expert reverts it --------------


def _docker_skip_reason() -> str | None:
    try:
        from mentorgym.sandboxes.docker import engine_available
    except ImportError as e:
        return f"the Docker sandbox is not importable: {e}"
    return engine_available()


_REASON = _docker_skip_reason()


def _smith_task(root: Path) -> dict:
    import os
    import subprocess

    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True).stdout  # fmt: skip

    repo = root / "smithcalc"
    (repo / "tests").mkdir(parents=True)
    (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (repo / "tests" / "test_calc.py").write_text(
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
        "def test_zero():\n    assert add(0, 0) == 0\n"
    )
    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-qm", "clean")
    (repo / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    bug = git("diff")
    git("checkout", "-q", "calc.py")
    return {
        "instance_id": "smith__calc.abc123.func_pm_op_swap__1",
        "repo": "swesmith/smith__calc.abc123",
        "patch": bug,  # SWE-smith: the patch introduces the bug
        "FAIL_TO_PASS": ["tests/test_calc.py::test_add"],
        "PASS_TO_PASS": ["tests/test_calc.py::test_zero"],
        "image_name": "jyangballin/swesmith.x86_64.smith_1776_calc.abc123",
        "repo_dir": str(repo),
        "problem_statement": "add(2, 3) is -1",
    }


@pytest.mark.docker
@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_swesmith_task_runs_inverted_in_docker(tmp_path: Path) -> None:
    from mentorgym.envs.base import format_tool_call
    from mentorgym.envs.swe.env import SWEEnv

    env = SWEEnv(tasks=[_smith_task(tmp_path)], pool_size=1)
    try:
        env.reset(options={"index": 0})
        out, *_ = env.step(format_tool_call("bash", {"command": "cat /testbed/calc.py; git -C /testbed log --oneline | wc -l"}))  # fmt: skip
        assert "a - b" in out[0]["content"]  # the bug is in place, in a one-commit history
        assert out[0]["content"].strip().endswith("1")
        _, reward, terminated, _, info = env.step(format_tool_call("submit", {}))
        assert terminated and reward == 0.0 and info["tests"]["tests/test_calc.py::test_add"] == "FAILED"  # fmt: skip
        env.reset(options={"index": 0})
        _, reward, _, _, info = env.step(env.expert_action())
        assert reward == 1.0, info
        assert "a + b" in info["model_patch"] and "a - b" in info["model_patch"]
    finally:
        env.close()
