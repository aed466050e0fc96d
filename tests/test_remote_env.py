"""`mentorgym/Remote-v0` against `mentorgym serve`: the checker, and the same trajectories as in
process for the same seeds (expert and replay agents), resume after a dropped connection."""

from __future__ import annotations

import json
import socket

import pytest
from gymnasium.utils.env_checker import check_env

import mentorgym
from mentorgym.agents.rollout import run
from mentorgym.agents.scripted import ExpertPolicy, ReplayPolicy
from mentorgym.env_server import BackgroundEnvServer, ServeSettings
from mentorgym.envs.remote import RemoteEnv, RemoteEnvError, ws_base


def drop(ws) -> None:
    """Cut the TCP connection without a close frame, as a network failure does."""
    ws.socket.shutdown(socket.SHUT_RDWR)
    ws.socket.close()


SERVED = ["mentorgym/Sokoban-v0", "mentorgym/MathTools-v0", "toy/ReverseWord-v0"]


@pytest.fixture(scope="module")
def server():
    with BackgroundEnvServer(SERVED, ServeSettings(max_sessions=16)) as srv:
        yield srv


def comparable(traj) -> dict:
    """A trajectory without what legitimately differs: timings, the id it was made under."""
    d = traj.to_dict()
    d.pop("env_id")
    d["meta"].pop("reset_s")
    for turn in d["turns"]:
        turn.pop("timing")
    return d


def test_remote_env_passes_the_checker(server):
    env = mentorgym.make("mentorgym/Remote-v0", url=server.url, env_id="mentorgym/Sokoban-v0")
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


@pytest.mark.parametrize("env_id", SERVED)
def test_expert_rollout_through_remote_equals_in_process(server, env_id):
    local = run(env_id, ExpertPolicy(), n=4, seed=11)
    remote = run(
        "mentorgym/Remote-v0",
        ExpertPolicy(),
        n=4,
        seed=11,
        env_kwargs={"url": server.url, "env_id": env_id},
    )
    assert [comparable(t) for t in remote] == [comparable(t) for t in local]
    assert all(t.env_id == "mentorgym/Remote-v0" for t in remote)


def test_replay_rollout_with_truncation_equals_in_process(server, tmp_path):
    # Bad moves until the turn limit: the server's TimeLimit truncates as in process.
    script = tmp_path / "moves.json"
    script.write_text(json.dumps(["<answer>Up</answer>", "nonsense"] * 15))
    policy = ReplayPolicy(script)
    local = run("mentorgym/Sokoban-v0", policy, n=3, seed=5)
    remote = run(
        "mentorgym/Remote-v0",
        policy,
        n=3,
        seed=5,
        env_kwargs={"url": server.url, "env_id": "mentorgym/Sokoban-v0"},
    )
    assert [comparable(t) for t in remote] == [comparable(t) for t in local]
    assert all(t.truncated for t in remote)


def test_first_env_is_served_at_the_root(server):
    env = RemoteEnv(server.url)
    try:
        messages, info = env.reset(seed=2)
        local = mentorgym.make("mentorgym/Sokoban-v0")
        assert (messages, info) == local.reset(seed=2)
        assert env.state()["env_id"] == "mentorgym/Sokoban-v0"
    finally:
        env.close()


def test_resume_after_a_dropped_connection_keeps_the_episode(server):
    env = RemoteEnv(server.url, env_id="mentorgym/Sokoban-v0")
    local = mentorgym.make("mentorgym/Sokoban-v0")
    try:
        env.reset(seed=9)
        local.reset(seed=9)
        moves = ["<answer>Left</answer>", "<answer>Down</answer>", "<answer>Right</answer>"]
        sid = env.session_id
        for move in moves:
            drop(env._ws)
            assert env.step(move) == local.step(move)
        assert env.session_id == sid and env.state()["step_count"] == len(moves)
    finally:
        env.close()


def test_a_step_that_ran_before_the_drop_is_not_run_twice(server):
    env = RemoteEnv(server.url, env_id="mentorgym/Sokoban-v0")
    local = mentorgym.make("mentorgym/Sokoban-v0")
    try:
        env.reset(seed=4)
        local.reset(seed=4)
        move = "<answer>Left</answer>"
        env._ws.send(json.dumps({"type": "step", "data": {"message": move}}))
        env._ws.recv()  # the server ran the step, then the reply is "lost" with the socket
        drop(env._ws)
        # The client sends the step again; on resume, `last` shows it already ran.
        assert env.step(move) == local.step(move)
        assert env.state()["step_count"] == 1
    finally:
        env.close()


def test_unknown_session_and_wrong_url_are_clear_errors(server):
    env = RemoteEnv(server.url)
    env.session_id = "no-such-session"
    with pytest.raises(RemoteEnvError, match="unknown or expired"):
        env._resume()
    with pytest.raises(RemoteEnvError, match="could not reach"):
        RemoteEnv("http://127.0.0.1:9", connect_timeout_s=2).reset(seed=0)
    with pytest.raises(Exception, match="write http://HOST:PORT"):
        ws_base("localhost:8000", None)
    assert ws_base("https://h:1/x/", "a/B-v0") == "wss://h:1/x/env/a/B-v0"


def test_client_env_kwargs_only_where_the_operator_allows_them():
    settings = ServeSettings(client_env_args=frozenset({"num_boxes"}))
    with BackgroundEnvServer(["mentorgym/Sokoban2-v0"], settings) as srv:
        env = RemoteEnv(srv.url, num_boxes=1)
        local = mentorgym.make("mentorgym/Sokoban2-v0", num_boxes=1)
        try:
            assert env.reset(seed=6) == local.reset(seed=6)
            assert env.step("<answer>Up</answer>") == local.step("<answer>Up</answer>")
        finally:
            env.close()
        refused = RemoteEnv(srv.url, sandbox="local")
        with pytest.raises(RemoteEnvError, match="may not be set by clients"):
            refused.reset(seed=0)
        refused.close()
