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


def test_recorded_frames_have_openenv_shapes():
    for frame in json.loads(FRAMES.read_text()):
        reply = frame.get("recv")
        if reply is None:
            continue
        assert set(reply) == {"type", "data"}
        if reply["type"] == "observation":
            assert set(reply["data"]) == {"observation", "reward", "done"}
            assert reply["data"]["reward"] is None or isinstance(reply["data"]["reward"], float)
        else:
            assert reply["type"] == "state" and isinstance(reply["data"]["step_count"], int)
