"""Rollout engine throughput: 32 Sokoban episodes with the tiny model, the engine (episodes
concurrent, one batched `generate` per round) against a plain loop that plays one episode at a
time with one `act` per turn, in the same run. Prints turns per second and the ratio.

    python bench/rollout_throughput.py [--episodes 32] [--max-new-tokens 12]
"""

from __future__ import annotations

import argparse
import json
import time

import mentorgym
from mentorgym.agents.hf import HFPolicy
from mentorgym.agents.rollout import run
from mentorgym.agents.tiny import default_tiny_path

ENV = "mentorgym/Sokoban-v0"


def plain_loop(policy: HFPolicy, seeds: list[int]) -> int:
    """What a simple scaffold does: one env, one episode after another, one call per turn."""
    env = mentorgym.make(ENV)
    turns = 0
    for seed in seeds:
        messages, _ = env.reset(seed=seed)
        history = list(messages)
        while True:
            action = policy.act(history)
            messages, _, terminated, truncated, _ = env.step(action.text)
            history += [{"role": "assistant", "content": action.text}, *messages]
            turns += 1
            if terminated or truncated:
                break
    env.close()
    return turns


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=12)
    args = p.parse_args()
    policy = HFPolicy(
        str(default_tiny_path()), temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0
    )
    seeds = list(range(args.episodes))

    t0 = time.perf_counter()
    trajs = run(ENV, policy, seeds=seeds, concurrency=args.episodes)
    engine_s = time.perf_counter() - t0
    engine_turns = sum(len(t.turns) for t in trajs)

    t0 = time.perf_counter()
    plain_turns = plain_loop(policy, seeds)
    plain_s = time.perf_counter() - t0

    engine_rate, plain_rate = engine_turns / engine_s, plain_turns / plain_s
    print(
        json.dumps(
            {
                "episodes": args.episodes,
                "engine_turns": engine_turns,
                "engine_s": round(engine_s, 2),
                "engine_turns_per_s": round(engine_rate, 2),
                "plain_turns": plain_turns,
                "plain_s": round(plain_s, 2),
                "plain_turns_per_s": round(plain_rate, 2),
                "speedup": round(engine_rate / plain_rate, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
