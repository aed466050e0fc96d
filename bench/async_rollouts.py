"""Asynchronous against lockstep rollouts when env steps take uneven time: 64 Sokoban episodes,
16 at a time, each env step followed by a random 0-500 ms sleep (a stand-in for a sandbox's tool
call or test run; the sleeps are seeded by episode, so both engines wait the same), with the
tiny model through `hf:` (or `--agent expert` for the env time alone). Prints episodes per
second of each engine and their ratio, from one run.

    python bench/async_rollouts.py [--episodes 64] [--at-a-time 16] [--max-step-s 0.5] [--agent tiny]
"""

from __future__ import annotations

import argparse
import json
import random
import time

import gymnasium

import mentorgym
from mentorgym.agents.rollout import run
from mentorgym.agents.specs import load_policy

SLOW_ENV = "bench/SlowSokoban-v0"


class UnevenSteps(gymnasium.Wrapper):
    """Sleeps a random 0..max_step_s after every step (seeded by the episode's seed)."""

    def __init__(self, max_step_s: float = 0.5):
        super().__init__(mentorgym.make("mentorgym/Sokoban-v0"))
        self.max_step_s = max_step_s
        self._rng = random.Random(0)

    def reset(self, *, seed=None, options=None):
        self._rng = random.Random(seed)
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        out = self.env.step(action)
        time.sleep(self._rng.uniform(0.0, self.max_step_s))
        return out


gymnasium.register(SLOW_ENV, entry_point=UnevenSteps)


def timed(
    policy, episodes: int, at_a_time: int, engine: str, max_step_s: float
) -> dict[str, float]:
    t0 = time.perf_counter()
    trajs = run(
        SLOW_ENV,
        policy,
        episodes,
        seed=0,
        concurrency=at_a_time,
        engine=engine,  # type: ignore[arg-type]
        env_kwargs={"max_step_s": max_step_s},
    )
    seconds = time.perf_counter() - t0
    turns = sum(len(t.turns) for t in trajs)
    return {
        "episodes": len(trajs),
        "turns": turns,
        "s": round(seconds, 2),
        "episodes_per_s": round(len(trajs) / seconds, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--at-a-time", type=int, default=16, help="live episodes (concurrency)")
    p.add_argument("--episodes", type=int, default=64, help="episodes in all")
    p.add_argument("--max-step-s", type=float, default=0.5)
    p.add_argument("--agent", default="tiny", help="agent spec (tiny: hf: on the tiny model)")
    p.add_argument("--max-new-tokens", type=int, default=12)
    args = p.parse_args()
    gen = {"temperature": 0.0} if args.agent != "expert" else {}
    if args.agent != "expert":
        gen["max_new_tokens"] = args.max_new_tokens
    policy = load_policy(args.agent, **gen)
    lockstep = timed(policy, args.episodes, args.at_a_time, "lockstep", args.max_step_s)
    asynchronous = timed(policy, args.episodes, args.at_a_time, "async", args.max_step_s)
    ratio = asynchronous["episodes_per_s"] / lockstep["episodes_per_s"]
    print(
        json.dumps(
            {
                "agent": args.agent,
                "max_step_s": args.max_step_s,
                "at_a_time": args.at_a_time,
                "lockstep": lockstep,
                "async": asynchronous,
                "async_vs_lockstep": round(ratio, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
