"""Load test of `mentorgym serve` on loopback: N concurrent WebSocket sessions step for D seconds.

    python bench/env_server_load.py --sessions 64 --duration 60            # the issue's figure
    python bench/env_server_load.py --env mentorgym/SWE-v0 --sessions 8 --duration 60

The server runs as its own process (`mentorgym serve`), the clients as asyncio tasks here.
Each session resets, then sends valid moves (random; Sokoban by default, a cheap `bash`
call for SWE) and resets again when an episode ends, until the time is up; then it sends
`close`. It stops by itself after `--duration` (each wait for a reply is bounded too).

Reported: step latency p50/p95/p99 (ms, client-side round trip), steps/s, and the checks:
lost steps (a step sent without an observation back, or the server's step_count not
matching the client's), sessions the server still holds after every client closed, and
for SWE the containers its process owns while it still serves (its warm pools, two per
task image, and removals still in flight) and after it exits (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
MOVES = [
    "<answer>Up</answer>",
    "<answer>Down</answer>",
    "<answer>Left</answer>",
    "<answer>Right</answer>",
]
SWE_STEP = '<tool_call>{"name": "bash", "arguments": {"command": "echo ok"}}</tool_call>'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env_id: str, max_sessions: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "mentorgym.cli", "serve", env_id, "--port", str(port)]
    cmd += ["--max-sessions", str(max_sessions)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the server did not start: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)


async def one_session(
    url: str, k: int, stop_at: float, latencies: list[float], action: str | None
) -> dict[str, int]:
    from websockets.asyncio.client import connect

    rng = random.Random(k)
    sent = answered = 0
    async with connect(url.replace("http", "ws", 1) + "/ws", max_size=None) as ws:

        async def ask(frame: dict[str, Any]) -> dict[str, Any]:
            await ws.send(json.dumps(frame))
            return json.loads(await asyncio.wait_for(ws.recv(), timeout=120))

        episode_steps = 0
        await ask({"type": "reset", "data": {"seed": k}})
        while time.monotonic() < stop_at:
            text = action or rng.choice(MOVES)
            t0 = time.perf_counter()
            sent += 1
            episode_steps += 1
            reply = await ask({"type": "step", "data": {"message": text}})
            latencies.append(time.perf_counter() - t0)
            if reply["type"] == "observation":
                answered += 1
                if reply["data"]["done"]:
                    await ask({"type": "reset", "data": {"seed": rng.randrange(10**6)}})
                    episode_steps = 0
        state = await ask({"type": "state"})
        mismatch = int(state["data"]["step_count"] != episode_steps)
        await ws.send(json.dumps({"type": "close"}))
    return {"sent": sent, "answered": answered, "count_mismatch": mismatch}


async def drive(url: str, sessions: int, duration_s: float, action: str | None) -> dict[str, Any]:
    latencies: list[float] = []
    t0 = time.monotonic()
    stop_at = t0 + duration_s
    runs = await asyncio.gather(
        *(one_session(url, k, stop_at, latencies, action) for k in range(sessions))
    )
    elapsed = time.monotonic() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

    sent = sum(r["sent"] for r in runs)
    answered = sum(r["answered"] for r in runs)
    return {
        "sessions": sessions,
        "seconds": round(elapsed, 1),
        "steps": sent,
        "steps_per_s": round(sent / elapsed, 1),
        "p50_ms": round(pct(50), 2),
        "p95_ms": round(pct(95), 2),
        "p99_ms": round(pct(99), 2),
        "lost_steps": sent - answered + sum(r["count_mismatch"] for r in runs),
    }


def load_test(url: str, sessions: int, duration_s: float, action: str | None = None) -> dict:
    """Drive a running server; returns the figures and the sessions it holds afterwards."""
    figures = asyncio.run(drive(url, sessions, duration_s, action))
    deadline = time.monotonic() + 10
    while True:  # a close is handled just after the client leaves
        held = httpx.get(url + "/sessions", timeout=5).json()["active"]
        if held == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return {**figures, "sessions_left": held}


def containers_of(pid: int) -> int:
    try:
        import docker

        c = docker.from_env()
        labels = {"label": f"mentorgym.owner_pid={pid}"}
        return len(c.containers.list(all=True, filters=labels))
    except Exception:
        return -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="mentorgym/Sokoban-v0")
    ap.add_argument("--sessions", type=int, default=64)
    ap.add_argument("--duration", type=float, default=60.0)
    args = ap.parse_args()
    action = SWE_STEP if "SWE" in args.env else None
    proc, url = start_server(args.env, max_sessions=args.sessions)
    try:
        figures = load_test(url, args.sessions, args.duration, action)
        if "SWE" in args.env:
            time.sleep(3)  # removals run in the background
            figures["containers_while_serving"] = containers_of(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    if "SWE" in args.env:
        figures["containers_left_after_exit"] = containers_of(proc.pid)
    print(json.dumps({"env": args.env, "cpus": os.cpu_count(), **figures}))


if __name__ == "__main__":
    main()
