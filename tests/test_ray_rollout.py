"""Rollouts on Ray workers (a local `ray.init(num_cpus=2)`): the same trajectories as a local
run for the same seeds, streamed to the same JSONL, and a worker killed mid-episode losing
that episode only (retried, or reported when it keeps dying)."""

from __future__ import annotations

import json

import pytest

from mentorgym.agents.rollout import run
from mentorgym.agents.scripted import ExpertPolicy, ReplayPolicy
from mentorgym.agents.trajectory import read_trajectories

ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")

from mentorgym.agents.ray_rollout import run_ray  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, object_store_memory=80 * 1024 * 1024, include_dashboard=False)
    yield
    ray.shutdown()


def comparable(traj) -> dict:
    d = traj.to_dict()
    d["meta"] = {k: v for k, v in d["meta"].items() if k not in ("reset_s", "executor", "node")}
    for turn in d["turns"]:
        turn.pop("timing")
    return d


@pytest.mark.parametrize("env_id", ["mentorgym/Sokoban-v0", "toy/ReverseWord-v0"])
def test_expert_on_ray_equals_local(env_id, tmp_path):
    out = tmp_path / "ray.jsonl"
    got = run_ray(env_id, "expert", n=6, seed=20, concurrency=3, out=out)
    local = run(env_id, ExpertPolicy(), n=6, seed=20)
    assert not got.failures
    assert [comparable(t) for t in got.trajectories] == [comparable(t) for t in local]
    assert all(t.meta["executor"] == "ray" for t in got.trajectories)
    # Streamed as they finished (any order), the same JSONL a local rollout writes.
    streamed = {t.meta["episode_key"]: comparable(t) for t in read_trajectories(out)}
    assert streamed == {t.meta["episode_key"]: comparable(t) for t in local}


def test_replay_on_ray_equals_local_and_resume_skips_done(tmp_path):
    script = tmp_path / "turns.json"
    script.write_text(json.dumps(["<answer>7</answer>", "<answer>12</answer>"]))
    local = run("mentorgym/MathTools-v0", ReplayPolicy(script), n=3, seed=1)
    out = tmp_path / "ray.jsonl"
    first = run_ray("mentorgym/MathTools-v0", f"replay:{script}", n=2, seed=1, out=out)
    again = run_ray("mentorgym/MathTools-v0", f"replay:{script}", n=3, seed=1, out=out, resume=True)
    assert [comparable(t) for t in again.trajectories] == [comparable(t) for t in local]
    assert len(first.trajectories) == 2 and len(list(read_trajectories(out))) == 3


def test_a_killed_worker_loses_only_its_episode(tmp_path):
    kwargs = {"marker_dir": str(tmp_path), "crash_seeds": [3]}
    got = run_ray("mentorgym_crashy:Crashy-v0", "expert", n=5, seed=0, env_kwargs=kwargs)
    assert not got.failures and (tmp_path / "crashed-3").exists()  # died once, then retried
    assert [t.seed for t in got.trajectories] == [0, 1, 2, 3, 4]
    assert all(t.success for t in got.trajectories)


def test_a_worker_that_keeps_dying_is_reported_and_the_run_goes_on(tmp_path):
    kwargs = {"marker_dir": str(tmp_path), "crash_seeds": [1], "always": True}
    out = tmp_path / "out.jsonl"
    got = run_ray(
        "mentorgym_crashy:Crashy-v0",
        "expert",
        n=4,
        seed=0,
        env_kwargs=kwargs,
        max_retries=1,
        concurrency=2,
        out=out,
    )
    assert [f.key for f in got.failures] == ["seed=1"] and got.failures[0].attempts == 2
    assert [t.seed for t in got.trajectories] == [0, 2, 3]
    assert sorted(t.seed for t in read_trajectories(out)) == [0, 2, 3]


def test_episode_errors_stop_the_run_with_the_message():
    from mentorgym.errors import ConfigError

    with pytest.raises(ConfigError, match="replay file"):
        run_ray("mentorgym/Sokoban-v0", "replay:/no/such/file.json", n=1)
    with pytest.raises(ConfigError, match="human"):
        run_ray("mentorgym/Sokoban-v0", "human", n=1)


def test_shared_policy_actor_serves_every_worker(tmp_path):
    script = tmp_path / "moves.json"
    script.write_text(json.dumps(["<answer>Left</answer>", "<answer>Up</answer>"] * 3))
    local = run("mentorgym/Sokoban-v0", ReplayPolicy(script), n=4, seed=8)
    got = run_ray(
        "mentorgym/Sokoban-v0", f"replay:{script}", n=4, seed=8, concurrency=2, shared_policy=True
    )
    assert [comparable(t) for t in got.trajectories] == [comparable(t) for t in local]
    from mentorgym.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be a shared policy"):
        run_ray("mentorgym/Sokoban-v0", "expert", n=1, shared_policy=True)


def test_ray_env_hosts_an_env_in_an_actor():
    from gymnasium.utils.env_checker import check_env

    import mentorgym

    env = mentorgym.make("mentorgym/Ray-v0", env_id="mentorgym/Sokoban-v0")
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()
    hosted = run(
        "mentorgym/Ray-v0",
        ExpertPolicy(),
        n=3,
        seed=2,
        concurrency=2,
        env_kwargs={"env_id": "toy/ReverseWord-v0"},
    )
    local = run("toy/ReverseWord-v0", ExpertPolicy(), n=3, seed=2)
    strip = [{**comparable(t), "env_id": None} for t in hosted]
    assert strip == [{**comparable(t), "env_id": None} for t in local]


def test_dagger_with_executor_ray_collects_what_local_collects(tmp_path):
    from pathlib import Path

    from mentorgym.agents.tiny import default_tiny_path
    from mentorgym.training.entry import train_from_config

    config = str(Path(__file__).resolve().parents[1] / "configs/sokoban_dagger.yaml")
    small = [
        "progress=false",
        "iterations=1",
        "steps_per_iteration=1",
        "batch_size=4",
        "episodes=3",
        "eval_episodes=2",
        "max_new_tokens=8",
        "concurrency=2",
        f"student={default_tiny_path()}",
    ]
    runs = {}
    for executor in ("local", "ray"):
        runs[executor] = train_from_config(
            config, [*small, f"env_placement={executor}"], str(tmp_path / executor), None, False
        )

    def rollouts(run_dir):
        lines = (run_dir / "iter_00" / "rollouts.jsonl").read_text().splitlines()
        trajs = sorted((json.loads(x) for x in lines), key=lambda t: t["seed"])
        for t in trajs:
            t.pop("env_id")
            t["meta"].pop("reset_s")
            for turn in t["turns"]:
                turn.pop("timing")
        return trajs

    assert rollouts(runs["ray"]) == rollouts(runs["local"])
