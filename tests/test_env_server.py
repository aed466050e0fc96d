"""`mentorgym serve`: OpenEnv's routes and frames, and the additions (token, resume, idle TTL,
session cap, size limits, step timeout, errors without tracebacks)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

import gymnasium
import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from mentorgym.env_server import BackgroundEnvServer, ServeSettings, check_bind
from mentorgym.envs.base import TextEnv, user
from mentorgym.errors import ConfigError

CLOSED: list[str] = []


class ProbeEnv(TextEnv):
    """A test env: `sleep S` sleeps, `boom` raises, anything else ends the episode."""

    def __init__(self, render_mode: str | None = None):
        super().__init__(render_mode)
        self.name = f"probe-{id(self)}"

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return [user(f"seed {seed}")], {"task_id": str(seed)}

    def step(self, action: str):
        if action.startswith("sleep "):
            time.sleep(float(action.split()[1]))
            return [user("slept")], 0.0, False, False, {}
        if action == "boom":
            raise KeyError("a secret internal detail\nTraceback (most recent call last): ...")
        return [user("done")], 1.0, True, False, {"success": True}

    def close(self) -> None:
        CLOSED.append(self.name)


gymnasium.register(id="test/Probe-v0", entry_point=ProbeEnv, max_episode_steps=5)


def drop(ws) -> None:
    """Cut the TCP connection without a close frame, as a network failure does."""
    ws.socket.shutdown(socket.SHUT_RDWR)
    ws.socket.close()


def send(ws, frame: dict) -> dict:
    ws.send(json.dumps(frame))
    return json.loads(ws.recv(timeout=30))


@pytest.fixture(scope="module")
def server():
    settings = ServeSettings(max_sessions=3, step_timeout_s=1.0, max_message_bytes=2000)
    with BackgroundEnvServer(["test/Probe-v0", "mentorgym/Sokoban-v0"], settings) as srv:
        yield srv


def wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_openenv_routes(server):
    assert httpx.get(server.url + "/health").json() == {"status": "healthy"}
    meta = httpx.get(server.url + "/env/mentorgym/Sokoban-v0/metadata").json()
    assert meta["name"] == "mentorgym/Sokoban-v0" and "Sokoban" in meta["description"]
    schema = httpx.get(server.url + "/schema").json()
    assert schema["action"]["required"] == ["message"]
    assert schema["action"]["properties"]["message"]["type"] == "string"
    assert schema["action"]["additionalProperties"] is False
    assert {"messages", "terminated", "truncated", "info"} <= set(
        schema["observation"]["properties"]
    )
    assert {"episode_id", "step_count"} <= set(schema["state"]["properties"])
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    assert {"/reset", "/step", "/state", "/mcp", "/env/mentorgym/Sokoban-v0/step"} <= set(paths)
    mcp = httpx.post(server.url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert mcp.status_code == 200 and mcp.json()["error"]["code"] == -32601


def test_stateless_reset_and_step(server):
    reset = httpx.post(server.url + "/env/mentorgym/Sokoban-v0/reset", json={"seed": 3}).json()
    assert reset["reward"] is None and reset["done"] is False
    assert reset["observation"]["messages"][0]["role"] == "system"
    step = httpx.post(
        server.url + "/step", json={"action": {"message": "anything"}, "seed": 1}
    ).json()
    assert step == {
        "observation": {
            "messages": [{"role": "user", "content": "done"}],
            "terminated": True,
            "truncated": False,
            "info": {"success": True},
        },
        "reward": 1.0,
        "done": True,
    }
    bad = httpx.post(server.url + "/step", json={"action": {"message": "x", "extra": 1}})
    assert bad.status_code == 422


def test_session_frames_and_errors(server):
    with connect(server.ws_url) as ws:
        assert ws.response.headers["X-Session-Id"]
        obs = send(ws, {"type": "reset", "data": {"seed": 4, "episode_id": "ep-1"}})
        assert obs == {
            "type": "observation",
            "data": {
                "observation": {
                    "messages": [{"role": "user", "content": "seed 4"}],
                    "terminated": False,
                    "truncated": False,
                    "info": {"task_id": "4"},
                },
                "reward": None,
                "done": False,
            },
        }
        state = send(ws, {"type": "state"})["data"]
        assert state["episode_id"] == "ep-1" and state["step_count"] == 0
        assert send(ws, {"type": "step", "data": {"message": 3}})["data"]["code"] == (
            "VALIDATION_ERROR"
        )
        assert send(ws, {"type": "step", "data": {"message": "x", "foo": 1}})["data"]["code"] == (
            "VALIDATION_ERROR"
        )
        ws.send("{not json")
        assert json.loads(ws.recv())["data"]["code"] == "INVALID_JSON"
        assert send(ws, {"type": "dance"})["data"]["code"] == "UNKNOWN_TYPE"
        assert send(ws, {"type": "mcp", "data": {}})["type"] == "mcp"
        done = send(ws, {"type": "step", "data": {"message": "finish"}})["data"]
        assert done["done"] is True and done["reward"] == 1.0
        again = send(ws, {"type": "step", "data": {"message": "finish"}})["data"]
        assert again["code"] == "VALIDATION_ERROR" and "reset" in again["message"]


def test_env_exception_is_one_line_and_closes_the_env(server):
    with connect(server.ws_url) as ws:
        send(ws, {"type": "reset", "data": {"seed": 1}})
        before = len(CLOSED)
        err = send(ws, {"type": "step", "data": {"message": "boom"}})["data"]
        assert err["code"] == "EXECUTION_ERROR"
        assert "KeyError" in err["message"] and "Traceback" not in err["message"]
        assert "\n" not in err["message"]
        assert len(CLOSED) == before + 1
        # The session goes on: reset makes a fresh env.
        assert send(ws, {"type": "reset", "data": {"seed": 2}})["type"] == "observation"


def test_step_timeout_ends_the_episode_truncated(server):
    with connect(server.ws_url) as ws:
        send(ws, {"type": "reset", "data": {"seed": 1}})
        obs = send(ws, {"type": "step", "data": {"message": "sleep 3"}})["data"]
        assert obs["done"] is True and obs["observation"]["truncated"] is True
        assert obs["observation"]["info"]["truncated_reason"] == "step_timeout"
        assert send(ws, {"type": "reset", "data": {"seed": 1}})["type"] == "observation"


def test_message_size_limit(server):
    with connect(server.ws_url) as ws:
        send(ws, {"type": "reset", "data": {}})
        err = send(ws, {"type": "step", "data": {"message": "x" * 5000}})["data"]
        assert err["code"] == "VALIDATION_ERROR" and "--max-message-bytes" in err["message"]
    big = httpx.post(server.url + "/reset", content=b"{" + b" " * 5000 + b"}")
    assert big.status_code == 413


def test_session_cap_gives_capacity_reached(server):
    wait_for(lambda: not server.service.sessions)
    held = [connect(server.ws_url).__enter__() for _ in range(3)]
    try:
        with connect(server.ws_url) as ws:
            err = json.loads(ws.recv(timeout=10))
            assert err["data"]["code"] == "CAPACITY_REACHED"
            assert err["data"]["max_sessions"] == 3 and "--max-sessions" in err["data"]["message"]
    finally:
        for ws in held:
            ws.close()  # a clean close ends the session
    wait_for(lambda: not server.service.sessions)


def test_resume_within_ttl_and_takeover():
    settings = ServeSettings(session_ttl_s=0.5)
    with BackgroundEnvServer(["test/Probe-v0"], settings) as srv:
        ws = connect(srv.ws_url).__enter__()
        sid = ws.response.headers["X-Session-Id"]
        send(ws, {"type": "reset", "data": {"seed": 8}})
        drop(ws)  # the session waits for a resume
        wait_for(lambda: srv.service.sessions[sid].owner is None)
        before = len(CLOSED)
        again = connect(srv.ws_url, additional_headers={"X-Session-Id": sid}).__enter__()
        assert again.response.headers["X-Session-Id"] == sid
        last = send(again, {"type": "last"})["data"]
        assert last["observation"]["messages"][0]["content"] == "seed 8"
        assert last["step_count"] == 0
        assert send(again, {"type": "state"})["data"]["seed"] == 8
        drop(again)
        # Idle past the TTL: the session and its env are closed.
        wait_for(lambda: sid not in srv.service.sessions)
        assert len(CLOSED) == before + 1
        with connect(srv.ws_url, additional_headers={"X-Session-Id": sid}) as late:
            err = json.loads(late.recv(timeout=10))["data"]
            assert err["code"] == "SESSION_ERROR" and "expired" in err["message"]


def test_a_running_step_is_not_idle():
    settings = ServeSettings(session_ttl_s=0.2, step_timeout_s=5)
    with BackgroundEnvServer(["test/Probe-v0"], settings) as srv:
        with connect(srv.ws_url) as ws:
            send(ws, {"type": "reset", "data": {}})
            obs = send(ws, {"type": "step", "data": {"message": "sleep 1"}})
            assert obs["type"] == "observation" and obs["data"]["done"] is False


def test_token_on_every_route_and_the_handshake():
    token = "s3cret-token"
    with BackgroundEnvServer(["test/Probe-v0"], ServeSettings(token=token)) as srv:
        good = {"Authorization": f"Bearer {token}"}
        paths = httpx.get(srv.url + "/openapi.json", headers=good).json()["paths"]
        for path, ops in paths.items():
            for method in ops:
                r = httpx.request(method, srv.url + path, json={})
                assert r.status_code == 401, (method, path)
                r = httpx.request(method, srv.url + path, json={}, headers={"X-API-Key": "no"})
                assert r.status_code == 401, (method, path)
        for path in ["/docs", "/openapi.json", "/nowhere"]:
            assert httpx.get(srv.url + path).status_code == 401
        assert httpx.get(srv.url + "/health", headers={"X-API-Key": token}).status_code == 200
        with pytest.raises(InvalidStatus) as e:
            connect(srv.ws_url)
        assert e.value.response.status_code == 403
        with pytest.raises(InvalidStatus):
            connect(srv.ws_url, additional_headers={"Authorization": "Bearer wrong"})
        with connect(srv.ws_url, additional_headers=good) as ws:
            assert send(ws, {"type": "reset", "data": {}})["type"] == "observation"


def test_no_token_beyond_loopback_is_refused():
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("0.0.0.0", "t")
    with pytest.raises(ConfigError, match="without a token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ConfigError, match="without a token"):
        check_bind("10.1.2.3", None)


def test_concurrent_sessions_step_independently(server):
    results: list[Any] = []

    def one(seed: int) -> None:
        with connect(server.url.replace("http", "ws") + "/env/mentorgym/Sokoban-v0/ws") as ws:
            first = send(ws, {"type": "reset", "data": {"seed": seed}})
            results.append((seed, first["data"]["observation"]["messages"][-1]["content"]))
            ws.send(json.dumps({"type": "close"}))

    threads = [threading.Thread(target=one, args=(s,)) for s in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({grid for _, grid in results}) == 3
    wait_for(lambda: not server.service.sessions)


def test_cli_refuses_to_bind_beyond_loopback_without_a_token():
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mentorgym.cli",
            "serve",
            "mentorgym/Sokoban-v0",
            "--host",
            "0.0.0.0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "MENTORGYM_SERVE_TOKEN"},
    )
    assert done.returncode == 2 and "without a token" in done.stderr
