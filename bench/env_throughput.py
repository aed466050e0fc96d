"""Sokoban throughput: mentorgym's env beside peer implementations, in one run.

Measures steps/s (a fixed cycle of the four moves, resetting when an episode ends) and
resets/s (a new 6x6 two-box room each) of

- mentorgym/Sokoban-v0 with dim_room=(6, 6), num_boxes=2, through `env.unwrapped` and
  through `gymnasium.make` (its wrappers: TimeLimit, OrderEnforcing, PassiveEnvChecker);
- gem-llm's text Sokoban (gem.envs.game_env.sokoban), textarena's Sokoban and gym-sokoban,
  on the same room settings,

and prints each peer's numbers with mentorgym's as ratios (mentorgym / peer). The peers are
not dependencies of mentorgym: install them in a separate venv, e.g.

    python -m venv /tmp/peers && /tmp/peers/bin/pip install -e . --no-deps
    /tmp/peers/bin/pip install gymnasium numpy 'torch==2.13.0' gem-llm textarena gym-sokoban
    /tmp/peers/bin/python bench/env_throughput.py

A peer that is missing or fails is reported with the reason and skipped.
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable

DIM = (6, 6)
BOXES = 2
MOVES = ("Up", "Down", "Left", "Right")


def rate(fn: Callable[[int], float], n: int, min_s: float) -> float:
    """Calls per second: runs fn(n) until min_s has passed; fn returns seconds to leave out.

    Step loops reset when an episode ends and return the time those resets took, so a
    slow generator does not count against a fast step (resets are measured on their own).
    """
    done = 0
    excluded = 0.0
    t0 = time.perf_counter()
    while True:
        excluded += fn(n)
        done += n
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return done / (dt - excluded)


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_mentorgym(wrapped: bool, min_s: float) -> tuple[float, float]:
    import gymnasium

    import mentorgym  # noqa: F401  (registers the ids)

    env = gymnasium.make(
        "mentorgym/Sokoban-v0", dim_room=DIM, num_boxes=BOXES, max_episode_steps=1000
    )
    target = env if wrapped else env.unwrapped
    actions = [f"<answer>{m}</answer>" for m in MOVES]
    target.reset(seed=0)

    def steps(n: int) -> float:
        skipped = 0.0
        for i in range(n):
            _obs, _r, term, trunc, _info = target.step(actions[i & 3])
            if term or trunc:
                skipped += timed(target.reset)
        return skipped

    def resets(n: int) -> float:
        for _ in range(n):
            target.reset()
        return 0.0

    return rate(steps, 5000, min_s), rate(resets, 200, min_s)


def bench_gem(min_s: float) -> tuple[float, float]:
    from gem.envs.game_env.sokoban import SokobanEnv

    env = SokobanEnv(dim_room=DIM, num_boxes=BOXES, max_turns=1000)
    actions = [f"\\boxed{{{m.lower()}}}" for m in MOVES]
    env.reset(seed=0)

    def steps(n: int) -> float:
        skipped = 0.0
        for i in range(n):
            _obs, _r, term, trunc, _info = env.step(actions[i & 3])
            if term or trunc:
                skipped += timed(env.reset)
        return skipped

    seed = [1]

    def resets(n: int) -> float:
        for _ in range(n):
            seed[0] += 1
            env.reset(seed=seed[0])
        return 0.0

    return rate(steps, 2000, min_s), rate(resets, 20, min_s)


def bench_textarena(min_s: float) -> tuple[float, float]:
    from textarena.envs.Sokoban.env import SokobanEnv

    env = SokobanEnv(dim_room=DIM, num_boxes=BOXES, max_turns=1000)
    actions = [f"[{m.lower()}]" for m in MOVES]
    env.reset(num_players=1, seed=0)

    def steps(n: int) -> float:
        skipped = 0.0
        for i in range(n):
            done, _info = env.step(actions[i & 3])
            # textarena builds its observation lazily; ask for it as an agent would
            env.get_observation()
            if done:
                skipped += timed(lambda: env.reset(num_players=1))
        return skipped

    seed = [1]

    def resets(n: int) -> float:
        for _ in range(n):
            seed[0] += 1
            env.reset(num_players=1, seed=seed[0])
        return 0.0

    return rate(steps, 2000, min_s), rate(resets, 20, min_s)


def bench_gym_sokoban(min_s: float) -> tuple[float, float]:
    import warnings

    warnings.filterwarnings("ignore")
    from gym_sokoban.envs.sokoban_env import SokobanEnv

    env = SokobanEnv(dim_room=DIM, num_boxes=BOXES, max_steps=1000)
    env.reset()

    def steps(n: int) -> float:
        skipped = 0.0
        for i in range(n):
            # actions 1..4 are push up/down/left/right; "tiny_rgb_array" is its cheapest image
            _obs, _r, done, _info = env.step(1 + (i & 3), observation_mode="tiny_rgb_array")
            if done:
                skipped += timed(env.reset)
        return skipped

    def resets(n: int) -> float:
        for _ in range(n):
            env.reset()
        return 0.0

    return rate(steps, 2000, min_s), rate(resets, 1, min_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--min-s", type=float, default=2.0, help="seconds per measurement")
    args = ap.parse_args()
    rows: list[tuple[str, float, float]] = []
    print(f"Sokoban {DIM[0]}x{DIM[1]}, {BOXES} boxes; each figure measured for >= {args.min_s} s\n")
    mg_raw = bench_mentorgym(False, args.min_s)
    mg_wrapped = bench_mentorgym(True, args.min_s)
    rows.append(("mentorgym (env.unwrapped)", *mg_raw))
    rows.append(("mentorgym (gymnasium.make)", *mg_wrapped))
    peers = [
        ("gem-llm", bench_gem),
        ("textarena", bench_textarena),
        ("gym-sokoban", bench_gym_sokoban),
    ]
    failed: list[str] = []
    for name, fn in peers:
        try:
            rows.append((name, *fn(args.min_s)))
        except Exception as e:  # a peer that cannot install or import is reported, not fatal
            failed.append(f"{name}: {type(e).__name__}: {e}")
            traceback.print_exc(limit=1)
    print(
        f"{'env':30s} {'steps/s':>10s} {'resets/s':>10s}  {'step ratio':>10s} {'reset ratio':>11s}"
    )
    for name, s, r in rows:
        print(f"{name:30s} {s:10.0f} {r:10.1f}  {mg_raw[0] / s:9.2f}x {mg_raw[1] / r:10.1f}x")
    peer_rows = rows[2:]
    if peer_rows:
        fast_step = max(peer_rows, key=lambda x: x[1])
        fast_reset = max(peer_rows, key=lambda x: x[2])
        print(
            f"\nmentorgym vs fastest peer: steps {mg_raw[0] / fast_step[1]:.2f}x ({fast_step[0]}), "
            f"through gymnasium.make {mg_wrapped[0] / fast_step[1]:.2f}x; "
            f"resets {mg_raw[1] / fast_reset[2]:.1f}x ({fast_reset[0]}), "
            f"through gymnasium.make {mg_wrapped[1] / fast_reset[2]:.1f}x"
        )
    for line in failed:
        print("peer skipped:", line)


if __name__ == "__main__":
    main()
