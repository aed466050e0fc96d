"""A short version of bench/env_server_load.py (the issue's figure is 64 sessions for 60 s):
16 concurrent WebSocket sessions step for 3 s against a server on loopback; no step is lost
and no session is left once the clients have closed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mentorgym.env_server import BackgroundEnvServer, ServeSettings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from env_server_load import load_test  # noqa: E402

pytestmark = pytest.mark.slow


def test_sixteen_sessions_lose_no_step_and_leave_no_session():
    with BackgroundEnvServer(["mentorgym/Sokoban-v0"], ServeSettings(max_sessions=16)) as srv:
        figures = load_test(srv.url, sessions=16, duration_s=3.0)
        assert not srv.service.sessions
    assert figures["steps"] > 16 and figures["lost_steps"] == 0
    assert figures["sessions_left"] == 0
    assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
