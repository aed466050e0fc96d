"""How `mentorgym view` scales: a byte-offset index against loading every trajectory.

Writes N Sokoban-shaped episodes (default 10,000 of 10 turns, about 40 MB), then times, in
the same process: the baseline (`read_trajectories` into a list, what the terminal viewer
did), building the viewer's index, one page, a filtered page, a text search, opening one
episode, and indexing 100 appended episodes. Prints each time, its ratio to the baseline
and the memory each way holds (tracemalloc peak).

    .venv/bin/python bench/viewer_index.py [--episodes 10000] [--turns 10]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

from mentorgym.agents.trajectory import read_trajectories
from mentorgym.viewer import Query, TrajectoryFile, query_episodes

GRID = "#########\n#   .   #\n#  $$   #\n#   @ . #\n#       #\n#########"


def episode(k: int, turns: int) -> dict:
    actors = ["teacher", "student"]
    return {
        "schema": 1,
        "env_id": "mentorgym/Sokoban-v0",
        "seed": k,
        "task_id": None,
        "turns": [
            {
                "observation": [{"role": "user", "content": f"Boxes on targets: 0/2\n{GRID}"}],
                "actor": actors[(k + t) % 2],
                "action": "<answer>Up</answer>" + (" needle" if k % 250 == 0 and t == 0 else ""),
                "reward": -0.1,
                "token_ids": list(range(8)),
                "logprobs": [-0.5] * 8,
                "teacher_action": "<answer>Left</answer>",
                "timing": {"policy_s": 0.01, "env_s": 0.001},
                "info": {},
            }
            for t in range(turns)
        ],
        "final_observation": [],
        "return": -0.1 * turns + (10 if k % 3 == 0 else 0),
        "success": k % 3 == 0,
        "terminated": True,
        "truncated": False,
        "meta": {"agent": "tiny", "teacher": "expert"},
    }


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def peak_mib(fn) -> tuple[float, object]:
    tracemalloc.start()
    out = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10_000)
    ap.add_argument("--turns", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "trajectories.jsonl"
        with open(path, "w") as f:
            for k in range(args.episodes):
                f.write(json.dumps(episode(k, args.turns)) + "\n")
        size = path.stat().st_size / 2**20

        base_s, trajs = timed(lambda: list(read_trajectories(path)))
        base_mib, _ = peak_mib(lambda: list(read_trajectories(path)))
        del trajs
        index = TrajectoryFile(path, 0, "trajectories", None, None)
        build_s, _ = timed(index.refresh)
        index_mib, _ = peak_mib(
            lambda: TrajectoryFile(path, 0, "trajectories", None, None).refresh()
        )
        page_s, _ = timed(lambda: query_episodes([index], Query(offset=5000, limit=50)), 5)
        filt_s, _ = timed(lambda: query_episodes([index], Query(success=False, mix="mixed")), 5)
        search_s, hits = timed(lambda: index._search("needle"), 3)
        open_s, _ = timed(lambda: index.read(args.episodes // 2), 5)
        with open(path, "a") as f:
            for k in range(100):
                f.write(json.dumps(episode(args.episodes + k, args.turns)) + "\n")
        grow_s, _ = timed(index.refresh)
        assert len(index.episodes) == args.episodes + 100 and len(hits) == -(-args.episodes // 250)

    print(f"{args.episodes} episodes x {args.turns} turns, {size:.1f} MiB")
    print(f"{'operation':<44} {'seconds':>9} {'x baseline':>11}")
    rows = [
        ("baseline: read_trajectories into a list", base_s),
        ("build the byte-offset index", build_s),
        ("one page (offset 5000, 50 rows)", page_s),
        ("filtered page (failures, mixed actors)", filt_s),
        ("text search over the file", search_s),
        ("open one episode (seek + parse)", open_s),
        ("index 100 appended episodes", grow_s),
    ]
    for name, s in rows:
        print(f"{name:<44} {s:>9.4f} {s / base_s:>11.4f}")
    print(
        f"memory held: all trajectories {base_mib:.1f} MiB, index {index_mib:.1f} MiB "
        f"({index_mib / base_mib:.3f}x)"
    )


if __name__ == "__main__":
    main()
