"""Compatibility proven with OpenEnv's own code (`openenv-core` from PyPI, the `openenv` test
extra): its GenericEnvClient drives mentorgym's server, its validator passes, and our
Remote-v0 drives a toy env served by its `create_fastapi_app`. Skips when openenv-core is
absent; scripts/test.sh installs it so these run in CI.

`python tests/test_openenv_compat.py` re-records tests/data/openenv_frames.json, the raw
frames of one stock-client session that tests/test_env_server_frames.py replays without
openenv-core.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mentorgym.env_server import BackgroundEnvServer
from mentorgym.envs.base import format_tool_call
from mentorgym.envs.remote import RemoteEnv

# Importing openenv-core (gradio, fastmcp) and its CLI takes about 30 s each on a CPU runner.
pytestmark = pytest.mark.slow

FRAMES = Path(__file__).parent / "data" / "openenv_frames.json"
RECORDED_ENV = "mentorgym/Sokoban-v0"


def _openenv():
    return pytest.importorskip(
        "openenv.core", reason="openenv-core is not installed (pip install -e '.[openenv]')"
    )


def normalize(frame: dict[str, Any]) -> dict[str, Any]:
    """Ids the server draws at random become placeholders, so sessions compare equal."""
    frame = json.loads(json.dumps(frame))
    if frame.get("type") == "state":
        for key in ("episode_id", "session_id"):
            if frame["data"].get(key):
                frame["data"][key] = f"<{key}>"
    return frame


def record_stock_session(url: str) -> list[dict[str, Any]]:
    """One session of OpenEnv's GenericEnvClient, with every frame it sent and received."""
    from openenv.core.generic_client import GenericEnvClient

    frames: list[dict[str, Any]] = []

    class Recording(GenericEnvClient):
        async def _send(self, message: dict[str, Any]) -> None:
            frames.append({"send": message})
            await super()._send(message)

        async def _receive(self) -> dict[str, Any]:
            reply = await super()._receive()
            frames[-1]["recv"] = normalize(reply)
            return reply

    async def session() -> None:
        async with Recording(base_url=url) as env:
            await env.reset(seed=7)
            await env.step({"message": "<answer>Up</answer>"})
            await env.step({"message": "a turn without an answer"})
            await env.state()

    asyncio.run(session())
    return frames


def test_recorded_frames_are_what_the_stock_client_exchanges():
    _openenv()
    with BackgroundEnvServer([RECORDED_ENV]) as srv:
        frames = record_stock_session(srv.url)
    assert frames == json.loads(FRAMES.read_text())


def _drive(url: str, first: dict[str, Any], actions: list[str]) -> list[Any]:
    from openenv.core.generic_client import GenericEnvClient

    with GenericEnvClient(base_url=url).sync() as env:
        results = [env.reset(**first)]
        for text in actions:
            results.append(env.step({"message": text}))
        state = env.state()
    return [results, state]


@pytest.mark.parametrize(
    "env_id, first, actions",
    [
        ("mentorgym/Sokoban-v0", {"seed": 3}, ["<answer>Left</answer>", "<answer>Up</answer>"]),
        (
            "mentorgym/MathTools-v0",
            {"seed": 1},
            [format_tool_call("python", {"code": "print(6*7)"}), "<answer>42</answer>"],
        ),
    ],
)
def test_generic_env_client_drives_mentorgym_envs(env_id, first, actions):
    _openenv()
    with BackgroundEnvServer([env_id]) as srv:
        (results, state) = _drive(srv.url, first, actions)
        assert not srv.service.sessions or all(
            s.owner is None for s in srv.service.sessions.values()
        )
    reset = results[0]
    assert reset.done is False and reset.reward is None
    assert reset.observation["messages"][0]["role"] == "system"
    for r in results[1:]:
        assert isinstance(r.reward, float)
        assert {"messages", "terminated", "truncated", "info"} <= set(r.observation)
    if env_id.endswith("MathTools-v0"):
        assert "42" in results[1].observation["messages"][0]["content"]
        assert results[2].done is True
    assert state["step_count"] == len(actions) and state["env_id"] == env_id


@pytest.mark.docker
def test_generic_env_client_drives_swe():
    _openenv()
    from mentorgym.sandboxes.docker import engine_available

    reason = engine_available()
    if reason:
        pytest.skip(reason)
    bash = format_tool_call("bash", {"command": "cd /testbed && git status --short | wc -l"})
    with BackgroundEnvServer(["mentorgym/SWE-v0"]) as srv:
        results, state = _drive(srv.url, {"seed": 0}, [bash])
        wait = time.monotonic() + 30
        while srv.service.sessions and time.monotonic() < wait:
            time.sleep(0.1)
        assert not srv.service.sessions  # the stock client's close ended the session
    assert "/testbed" in results[0].observation["messages"][1]["content"]
    assert results[1].observation["messages"][0]["content"].strip().endswith("0")
    assert state["task_id"] and state["step_count"] == 1


def test_openenv_validate_passes_against_mentorgym_serve():
    _openenv()
    exe = shutil.which("openenv") or str(Path(sys.executable).parent / "openenv")
    with BackgroundEnvServer(["mentorgym/Sokoban-v0"]) as srv:
        done = subprocess.run(
            [exe, "validate", srv.url, "--json"], capture_output=True, text=True, timeout=120
        )
    report = json.loads(done.stdout)
    failed = [c for c in report["criteria"] if not c["passed"]]
    assert done.returncode == 0 and report["passed"], failed
    assert report["mode"] == "simulation"


# --- Remote-v0 against OpenEnv's own server ---------------------------------------------------


def _toy_openenv_app():
    """A toy OpenEnv env, served by OpenEnv's `create_fastapi_app`: it shouts the message back."""
    from openenv.core.env_server.http_server import create_fastapi_app
    from openenv.core.env_server.interfaces import Environment
    from openenv.core.env_server.types import Action, Observation, State

    class ShoutAction(Action):
        message: str

    class ShoutObservation(Observation):
        text: str = ""

    class ShoutEnv(Environment):
        SUPPORTS_CONCURRENT_SESSIONS = True

        def __init__(self) -> None:
            super().__init__()
            self._state = State(episode_id=None, step_count=0)

        def reset(self, seed=None, episode_id=None, **kwargs):
            self._state = State(episode_id=episode_id or f"seed-{seed}", step_count=0)
            return ShoutObservation(text=f"say something (seed {seed})")

        def step(self, action, timeout_s=None, **kwargs):
            self._state.step_count += 1
            done = self._state.step_count >= 2
            return ShoutObservation(
                text=action.message.upper(), done=done, reward=float(len(action.message))
            )

        @property
        def state(self):
            return self._state

    return create_fastapi_app(ShoutEnv, ShoutAction, ShoutObservation, max_concurrent_envs=4)


def test_remote_env_drives_an_openenv_server():
    _openenv()
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(_toy_openenv_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.02)
    env = RemoteEnv(f"http://127.0.0.1:{port}")
    try:
        messages, info = env.reset(seed=5)
        assert json.loads(messages[0]["content"]) == {"text": "say something (seed 5)"}
        messages, reward, terminated, truncated, info = env.step("hello")
        assert json.loads(messages[0]["content"]) == {"text": "HELLO"} and reward == 5.0
        assert not terminated and not truncated
        *_, terminated, truncated, _ = env.step("again")
        assert terminated and not truncated
        assert env.expert_action() is None  # OpenEnv has no oracle frame: UNKNOWN_TYPE
        assert env.state()["step_count"] == 2
    finally:
        env.close()
        server.should_exit = True
        thread.join(timeout=10)


if __name__ == "__main__":  # re-record the frames that the default test run replays
    with BackgroundEnvServer([RECORDED_ENV]) as srv:
        FRAMES.write_text(json.dumps(record_stock_session(srv.url), indent=1) + "\n")
    print(f"wrote {FRAMES}")
