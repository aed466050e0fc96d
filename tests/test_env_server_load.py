"""A short version of bench/env_server_load.py (the issue's figure is 64 sessions for 60 s):
16 concurrent WebSocket sessions step for 3 s against a server on loopback.

What must hold under load, each checked so that it fails when the behaviour breaks:
- every session is served (none starves while the others step), every step gets its
  observation, and the server's step count of each session is the client's;
- the sessions are served at once: the server held all 16 at the same time;
- the session cap holds under load: a 17th client gets CAPACITY_REACHED, and is served
  once a session has closed;
- no session is left once the clients have closed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
import pytest

from mentorgym.env_server import BackgroundEnvServer, ServeSettings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from env_server_load import one_session  # noqa: E402

pytestmark = pytest.mark.slow

SESSIONS = 16


async def _load(url: str, duration_s: float) -> tuple[list[dict[str, int]], int, dict]:
    """Run SESSIONS sessions for `duration_s`; meanwhile record the most sessions the server
    held at once and what a 17th client is told."""
    stop_at = time.monotonic() + duration_s
    latencies: list[float] = []
    runs = asyncio.gather(*(one_session(url, k, stop_at, latencies, None) for k in range(SESSIONS)))
    peak, refused = 0, {}
    async with httpx.AsyncClient() as http:
        while time.monotonic() < stop_at - 0.5:
            held = (await http.get(url + "/sessions", timeout=5)).json()["active"]
            peak = max(peak, held)
            if held == SESSIONS and not refused:
                refused = await _one_reset(url)
            await asyncio.sleep(0.05)
    return await runs, peak, refused


async def _one_reset(url: str) -> dict:
    """The reply to one reset (a refused client gets the error frame, then code 1013)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(url.replace("http", "ws", 1) + "/ws") as ws:
        try:
            await ws.send(json.dumps({"type": "reset", "data": {"seed": 99}}))
        except ConnectionClosed:
            pass  # a full server answers at connect, before the client asks for anything
        reply = json.loads(await asyncio.wait_for(ws.recv(), timeout=60))
        try:
            await ws.send(json.dumps({"type": "close"}))
            await ws.wait_closed()
        except ConnectionClosed:
            pass
        reply["close_code"] = ws.close_code
    return reply


def _sessions_left(url: str) -> int:
    deadline = time.monotonic() + 10
    while True:  # a close is handled just after the client leaves
        held = httpx.get(url + "/sessions", timeout=5).json()["active"]
        if held == 0 or time.monotonic() > deadline:
            return held
        time.sleep(0.05)


def test_sixteen_sessions_are_all_served_and_the_cap_holds():
    settings = ServeSettings(max_sessions=SESSIONS)
    with BackgroundEnvServer(["mentorgym/Sokoban-v0"], settings) as srv:
        runs, peak, refused = asyncio.run(_load(srv.url, duration_s=3.0))
        left = _sessions_left(srv.url)
        after = asyncio.run(_one_reset(srv.url))  # the slots are free again
    assert all(r["sent"] > 0 for r in runs), runs  # no session starved
    assert all(r["answered"] == r["sent"] for r in runs), runs  # no step lost
    assert all(r["count_mismatch"] == 0 for r in runs), runs
    assert peak == SESSIONS  # served at once, not one after another
    assert refused["type"] == "error" and refused["data"]["code"] == "CAPACITY_REACHED"
    assert refused["close_code"] == 1013  # try again later
    assert after["type"] == "observation"
    assert left == 0
