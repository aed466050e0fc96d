"""Per-step overhead of `mentorgym/Remote-v0` (a `mentorgym serve` process on loopback) against
the same env in process: Sokoban moves, and SWE `bash` steps (which need Docker).

    python bench/remote_overhead.py                 # Sokoban 2000 steps, SWE 100 bash steps
    python bench/remote_overhead.py --skip-swe

Both sides play the same actions from the same seeds; only `step` is timed. Reported:
ms per step in process and remote, the milliseconds remote adds, and the ratio. The goal
in the issue is under 2 ms added per step on loopback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from env_server_load import MOVES, start_server  # noqa: E402

import mentorgym  # noqa: E402
from mentorgym.envs.remote import RemoteEnv  # noqa: E402

SWE_BASH = '<tool_call>{"name": "bash", "arguments": {"command": "echo ok"}}</tool_call>'


def time_steps(env, actions: list[str], seed: int) -> float:
    """Seconds per step over `actions`, resetting (untimed) whenever an episode ends."""
    env.reset(seed=seed)
    spent = 0.0
    for k, text in enumerate(actions):
        t0 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(text)
        spent += time.perf_counter() - t0
        if terminated or truncated:
            env.reset(seed=seed + k + 1)
    return spent / len(actions)


def compare(env_id: str, actions: list[str], seed: int) -> dict[str, float]:
    local = mentorgym.make(env_id)
    proc, url = start_server(env_id, max_sessions=4)
    remote = RemoteEnv(url)
    try:
        time_steps(local, actions[:20], seed)  # warm up both (imports, first container)
        time_steps(remote, actions[:20], seed)
        in_process = time_steps(local, actions, seed)
        over_ws = time_steps(remote, actions, seed)
    finally:
        local.close()
        remote.close()
        proc.terminate()
        proc.wait(timeout=60)
    return {
        "steps": len(actions),
        "in_process_ms": round(1000 * in_process, 3),
        "remote_ms": round(1000 * over_ws, 3),
        "added_ms": round(1000 * (over_ws - in_process), 3),
        "ratio": round(over_ws / in_process, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sokoban-steps", type=int, default=2000)
    ap.add_argument("--swe-steps", type=int, default=100)
    ap.add_argument("--skip-swe", action="store_true")
    args = ap.parse_args()
    moves = [MOVES[k % 4] for k in range(args.sokoban_steps)]
    rows = {"sokoban": compare("mentorgym/Sokoban-v0", moves, seed=0)}
    if not args.skip_swe:
        from mentorgym.sandboxes.docker import engine_available

        reason = engine_available()
        if reason:
            rows["swe_bash"] = {"skipped": reason}
        else:
            rows["swe_bash"] = compare("mentorgym/SWE-v0", [SWE_BASH] * args.swe_steps, seed=0)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
