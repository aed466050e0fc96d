"""Fixture runs and trajectory files for the viewer's tests (API and browser)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mentorgym.agents.trajectory import Trajectory, TrajectoryWriter, Turn

GRID = "#######\n#  .  #\n#  $  #\n#  @  #\n#######"
XSS_SCRIPT = "<script>window.__pwned = 1</script>"
XSS_IMG = '<img src=x onerror="window.__pwned = 2">'
XSS_LINK = '<a href="javascript:window.__pwned = 3">click me</a>'
STUDENT_TEXT = "<answer>Left</answer> I think the box goes left"
TEACHER_LABEL = "<answer>Up</answer>"
SYSTEM = {"role": "system", "content": "You are playing Sokoban. Push every box onto a target."}


def obs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Boxes on targets: 0/1\n{text}"}]


def episode(
    seed: int,
    success: bool,
    actors: list[str],
    actions: list[str] | None = None,
    labels: list[str | None] | None = None,
    env_id: str = "mentorgym/Sokoban-v0",
    format_error_at: int | None = None,
) -> Trajectory:
    actions = actions or ["<answer>Up</answer>"] * len(actors)
    labels = labels or ["<answer>Up</answer>"] * len(actors)
    turns = []
    for k, (who, act, label) in enumerate(zip(actors, actions, labels, strict=True)):
        turns.append(
            Turn(
                observation=([SYSTEM] if k == 0 else []) + obs(GRID),
                actor=who,
                action=act,
                reward=-0.1 if not (success and k == len(actors) - 1) else 10.9,
                teacher_action=label,
                timing={"policy_s": 0.012 * (k + 1), "env_s": 0.001},
                info={"format_error": True} if k == format_error_at else {},
            )
        )
    return Trajectory(
        env_id=env_id,
        seed=seed,
        turns=turns,
        final_observation=obs(GRID),
        success=success,
        terminated=success,
        truncated=not success,
        meta={"agent": "hf:student", "teacher": "expert", "beta": 0.5},
    )


PATCH = (
    "diff --git a/pkg/mod.py b/pkg/mod.py\n--- a/pkg/mod.py\n+++ b/pkg/mod.py\n"
    "@@ -1,3 +1,3 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n"
)
LONG_OUTPUT = "\n".join(f"tests/test_mod.py::test_{i} PASSED" for i in range(200))


def swe_episode() -> Trajectory:
    """A SWE episode: a long test log (folds) and a submitted patch (highlighted)."""
    call = '<tool_call>{"name": "bash", "arguments": {"command": "pytest -v"}}</tool_call>'
    return Trajectory(
        env_id="mentorgym/SWE-v0",
        task_id="toy__add-1",
        turns=[
            Turn(
                observation=[{"role": "user", "content": "Fix add()."}],
                actor="student",
                action=call,
            ),
            Turn(
                observation=[{"role": "tool", "content": LONG_OUTPUT}],
                actor="student",
                action='<tool_call>{"name": "submit", "arguments": {}}</tool_call>',
                reward=1.0,
                info={"model_patch": PATCH},
            ),
        ],
        success=True,
        terminated=True,
        meta={"agent": "hf:student"},
    )


def write(path: Path, trajs: list[Trajectory]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with TrajectoryWriter(path) as w:
        for t in trajs:
            w.write(t)
    return path


def metrics_records(iterations: int, steps_per_iteration: int = 5) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    step = 0
    for i in range(iterations):
        for _ in range(steps_per_iteration):
            step += 1
            out.append(
                {"kind": "train", "step": step, "loss": 3.0 / step, "lr": 1e-3, "iteration": i}
            )
        out.append(
            {
                "kind": "eval",
                "iteration": i,
                "step": step,
                "success_rate": 0.2 * (i + 1),
                "beta": 1 - i / 3,
            }
        )
    return out


def make_run(root: Path, name: str = "sokoban_dagger", iterations: int = 2) -> Path:
    """A run directory as `mentorgym train` writes one: config, metrics, per-iteration
    rollouts and held-out episodes. Iteration 1 holds the failed episode a test opens: a
    student turn whose label differs, and actions that try to run script in the page."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"algorithm: dagger\nenv_id: mentorgym/Sokoban-v0\niterations: {iterations + 1}\nlr: 0.003\n"
    )
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in metrics_records(iterations))
    )
    write(
        run / "iter_00" / "rollouts.jsonl",
        [episode(s, True, ["teacher", "teacher"]) for s in range(3)],
    )
    write(
        run / "iter_01" / "rollouts.jsonl",
        [
            episode(10, True, ["teacher", "student"]),
            episode(
                11,
                False,
                ["teacher", "student", "student", "student", "student"],
                actions=["<answer>Up</answer>", STUDENT_TEXT, XSS_SCRIPT, XSS_IMG, XSS_LINK],
                labels=[None, TEACHER_LABEL, "<answer>Down</answer>", XSS_IMG, None],
                format_error_at=2,
            ),
            episode(12, True, ["student", "student"]),
        ],
    )
    write(run / "iter_01" / "swe.jsonl", [swe_episode()])
    write(
        run / "iter_01" / "eval.jsonl",
        [episode(1_000_000 + s, s % 2 == 0, ["student"]) for s in range(4)],
    )
    return run


def make_metrics_only_run(root: Path, name: str, iterations: int) -> Path:
    """A second run to overlay: config and metrics, no trajectories."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"algorithm: sft\niterations: {iterations}\n")
    records = metrics_records(iterations)
    for r in records:
        if "success_rate" in r:
            r["success_rate"] /= 2
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def big_file(path: Path, n: int) -> list[dict[str, Any]]:
    """n episodes written straight as JSON lines (fast), over two envs and three actor mixes;
    every 7th is a success, episode k's return is k/100 - 50, and every 100th holds the word
    'needle' in an action. Returns the dicts written."""
    rows = []
    with open(path, "w", encoding="utf-8") as f:
        for k in range(n):
            actors = [["student"] * 3, ["teacher"] * 3, ["teacher", "student", "student"]][k % 3]
            action = "<answer>Up</answer> needle" if k % 100 == 0 else "<answer>Up</answer>"
            d = {
                "schema": 1,
                "env_id": "mentorgym/Sokoban-v0" if k % 2 else "mentorgym/MathTools-v0",
                "seed": k,
                "task_id": None,
                "turns": [
                    {
                        "observation": obs(GRID),
                        "actor": a,
                        "action": action,
                        "reward": 0.0,
                        "token_ids": None,
                        "logprobs": None,
                        "teacher_action": "<answer>Down</answer>" if a == "student" else None,
                        "timing": {"policy_s": 0.0, "env_s": 0.0},
                        "info": {},
                    }
                    for a in actors
                ],
                "final_observation": [],
                "return": k / 100 - 50,
                "success": k % 7 == 0,
                "terminated": True,
                "truncated": False,
                "meta": {"agent": "tiny"},
            }
            rows.append(d)
            f.write(json.dumps(d) + "\n")
    return rows
