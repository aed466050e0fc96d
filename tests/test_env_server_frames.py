"""The wire format, kept checked without openenv-core: the raw frames that OpenEnv's stock
client exchanged with `mentorgym serve` in one session (recorded by
tests/test_openenv_compat.py, which also checks the recording is still what that client
sends) are replayed with plain `websockets`, and the server must answer each one the same."""

from __future__ import annotations

import json
from pathlib import Path

from websockets.sync.client import connect

from mentorgym.env_server import BackgroundEnvServer

FRAMES = Path(__file__).parent / "data" / "openenv_frames.json"


def normalize(frame: dict) -> dict:
    if frame.get("type") == "state":
        for key in ("episode_id", "session_id"):
            if frame["data"].get(key):
                frame["data"][key] = f"<{key}>"
    return frame


def test_recorded_openenv_session_replays_frame_for_frame():
    frames = json.loads(FRAMES.read_text())
    assert [f["send"]["type"] for f in frames] == ["reset", "step", "step", "state", "close"]
    with BackgroundEnvServer(["mentorgym/Sokoban-v0"]) as srv:
        with connect(srv.ws_url) as ws:
            for frame in frames:
                ws.send(json.dumps(frame["send"]))
                if "recv" in frame:
                    assert normalize(json.loads(ws.recv(timeout=30))) == frame["recv"]
        assert not srv.service.sessions  # the close frame ended the session


def check_openenv_shape(reply: dict) -> None:
    """The shapes OpenEnv's stock client reads: `{type, data}`; an observation's data is
    `{observation, reward, done}` with the env's messages, flags and info inside."""
    assert set(reply) == {"type", "data"}, reply
    if reply["type"] == "observation":
        data = reply["data"]
        assert set(data) == {"observation", "reward", "done"}, data
        assert data["reward"] is None or isinstance(data["reward"], float)
        assert isinstance(data["done"], bool)
        obs = data["observation"]
        assert {"messages", "terminated", "truncated", "info"} <= set(obs), obs
        assert all(set(m) >= {"role", "content"} for m in obs["messages"])
        assert data["done"] == (obs["terminated"] or obs["truncated"])
    elif reply["type"] == "state":
        assert isinstance(reply["data"]["step_count"], int)
    else:
        assert reply["type"] == "error" and {"message", "code"} <= set(reply["data"]), reply


def test_recorded_frames_have_openenv_shapes():
    for frame in json.loads(FRAMES.read_text()):
        if "recv" in frame:
            check_openenv_shape(frame["recv"])


def test_live_frames_over_a_whole_episode_have_openenv_shapes():
    """Frames the live server produces now, not the recording: a whole episode to its turn
    limit (the truncated last step), the state, and the error frame of a malformed request."""
    with BackgroundEnvServer(["mentorgym/Sokoban-v0"]) as srv:
        with connect(srv.ws_url) as ws:

            def ask(frame: dict) -> dict:
                ws.send(json.dumps(frame))
                reply = json.loads(ws.recv(timeout=30))
                check_openenv_shape(reply)
                return reply

            first = ask({"type": "reset", "data": {"seed": 3}})
            assert first["type"] == "observation" and not first["data"]["done"]
            replies = []
            while not (replies and replies[-1]["data"]["done"]):
                replies.append(ask({"type": "step", "data": {"message": "no move here"}}))
                assert replies[-1]["type"] == "observation" and len(replies) <= 100
            last = replies[-1]["data"]["observation"]
            assert last["truncated"] and not last["terminated"]  # the turn limit, 20 steps
            state = ask({"type": "state"})
            assert state["data"]["step_count"] == len(replies) == 20
            assert ask({"type": "step"})["type"] == "error"  # no data: a validation error
            ws.send(json.dumps({"type": "close"}))
        assert not srv.service.sessions
