"""The people-facing commands: play by hand (typed moves), watch, view, and the sandbox commands."""

import json
import os
import subprocess
import sys

import pytest

import mentorgym
from mentorgym.envs.sokoban import solve


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}  # rich wraps tables to the terminal width
    return subprocess.run(
        [sys.executable, "-m", "mentorgym.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_play_sokoban_with_typed_moves_solves_the_room():
    env = mentorgym.make("mentorgym/Sokoban-v0")
    env.reset(seed=3)
    plan = solve(env.unwrapped.grid_text(), time_limit_s=10)
    moves = "\n".join(m.lower() for m in plan) + "\n"
    r = _cli("play", "mentorgym/Sokoban-v0", "--seed", "3", stdin="jump\n" + moves)
    assert r.returncode == 0, r.stderr
    assert "solved" in r.stdout and "not solved" not in r.stdout
    assert "Format error" in r.stdout  # "jump" is not a move: the env said what it expects


def test_watch_and_view(tmp_path):
    r = _cli("watch", "mentorgym/MathTools-v0", "--agent", "expert", "--delay", "0")
    assert r.returncode == 0 and "success" in r.stdout, r.stderr
    out = tmp_path / "t.jsonl"
    assert (
        _cli(
            "rollout", "mentorgym/Sokoban-v0", "--agent", "expert", "-n", "2", "--out", str(out)
        ).returncode
        == 0
    )
    table = _cli("view", str(out), "--list")
    assert table.returncode == 0 and "mentorgym/Sokoban-v0" in table.stdout
    one = _cli("view", str(out), "--episode", "1")
    assert one.returncode == 0 and "turn 0" in one.stdout
    missing = _cli("view", str(out), "--episode", "7")
    assert missing.returncode != 0 and "holds 2 episode(s)" in missing.stderr


def test_rollout_resume_from_the_cli(tmp_path):
    out = tmp_path / "r.jsonl"
    _cli("rollout", "mentorgym/Sokoban-v0", "--agent", "expert", "-n", "2", "--out", str(out))
    r = _cli(
        "rollout",
        "mentorgym/Sokoban-v0",
        "--agent",
        "expert",
        "-n",
        "4",
        "--out",
        str(out),
        "--resume",
    )
    assert json.loads(r.stdout)["episodes"] == 4
    assert len(out.read_text().splitlines()) == 4


def test_mixture_rollout_records_actor_and_label(tmp_path):
    out = tmp_path / "m.jsonl"
    r = _cli(
        "rollout",
        "mentorgym/Sokoban-v0",
        "--agent",
        "random",
        "--teacher",
        "expert",
        "--beta",
        "0.5",
        "-n",
        "4",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    episodes = [json.loads(line)["turns"] for line in out.read_text().splitlines()]
    turns = [t for ep in episodes for t in ep]
    assert {t["actor"] for t in turns} == {"student", "teacher"}
    labels = [t["teacher_action"] for t in turns if t["teacher_action"]]
    assert labels and all(a.startswith("<answer>") for a in labels)
    # The solver has no move only in a dead end (a box pushed where it can never leave), and
    # the random student acts there: once a turn is unlabelled, the rest of its episode is too.
    for ep in episodes:
        missing = [i for i, t in enumerate(ep) if not t["teacher_action"]]
        assert missing == list(range(missing[0], len(ep))) if missing else True
        assert all(ep[i]["actor"] == "student" for i in missing)


@pytest.mark.docker
def test_sandbox_commands():
    from mentorgym.sandboxes.docker import engine_available

    reason = engine_available()
    if reason:
        pytest.skip(reason)
    r = _cli("sandbox", "reap")
    assert r.returncode == 0 and "removed" in r.stdout
    r = _cli("sandbox", "build-base")
    assert r.returncode == 0 and "mentorgym/base" in r.stdout
