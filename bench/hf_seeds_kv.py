"""`hf:` in the asynchronous engine: what per-episode seeds cost, and what the KV cache kept
between an episode's turns gains, in one run on the same episodes.

    python bench/hf_seeds_kv.py [--episodes 32] [--max-new-tokens 12] [--turns 8] [--repeats 3]

Four `hf:` configurations play the same full-history Sokoban episodes (`context_turns: 0`,
so each turn's prompt extends the last one) with the tiny model, through the asynchronous
engine:

- `shared_stream`: the engine before per-episode seeds, every row drawing from one
  generator, the whole prompt re-read every turn (the policy ignores the engine's seeds);
- `seeded`: each row from its own generator, seeded by (run seed, episode, turn);
- `seeded_kv`: the same, keeping each live episode's KV cache between its turns;
- and greedy decoding with and without the cache, whose token ids must be identical.

Prints the median turns/s of `--repeats` timed rounds after one warm-up run each (a round
plays the three configurations back to back), and the medians over rounds of the ratios
`seeded / shared_stream` (the cost of reproducibility) and `seeded_kv / seeded` (the
cache's gain), plus the share of prompt tokens the cache did not re-read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from mentorgym.agents.hf import HFPolicy
from mentorgym.agents.rollout import run
from mentorgym.agents.tiny import default_tiny_path

ENV = "mentorgym/Sokoban-v0"


def policy(kv: bool, seeded: bool, temperature: float, max_new: int) -> HFPolicy:
    p = HFPolicy(
        str(default_tiny_path()),
        temperature=temperature,
        max_new_tokens=max_new,
        context_turns=0,
        seed=0,
        kv_cache=kv,
        dtype="float32",
    )
    p.takes_request_seeds = seeded  # False: the engine's seeds are not passed (one stream)
    return p


def play(p: HFPolicy, seeds: list[int], turns: int) -> tuple[float, list]:
    t0 = time.perf_counter()
    trajs = run(
        ENV,
        p,
        seeds=seeds,
        concurrency=len(seeds),
        env_kwargs={"max_episode_steps": turns},
    )
    seconds = time.perf_counter() - t0
    n = sum(len(t.turns) for t in trajs)
    return n / seconds, [[turn.token_ids for turn in t.turns] for t in trajs]


def measure(
    policies: dict[str, HFPolicy], seeds: list[int], turns: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Each configuration warmed up once, then `repeats` rounds that play every configuration
    in turn (interleaved, so a change of load on a shared machine hits all of them alike)."""
    for p in policies.values():
        play(p, seeds[:2], turns)  # warm-up
        p.kv_stats = {"prompt_tokens": 0, "reused_tokens": 0}
    rates: dict[str, list[float]] = {name: [] for name in policies}
    for _ in range(repeats):
        for name, p in policies.items():
            rates[name].append(play(p, seeds, turns)[0])
    out: dict[str, dict[str, float]] = {}
    for name, p in policies.items():
        out[name] = {"turns_per_s": round(statistics.median(rates[name]), 2)}
        if p.kv_cache:
            out[name]["prompt_tokens_not_reread"] = round(
                p.kv_stats["reused_tokens"] / max(1, p.kv_stats["prompt_tokens"]), 3
            )
    out["ratios"] = {
        "seeded_vs_shared_stream": _median_ratio(rates["seeded"], rates["shared_stream"]),
        "kv_vs_reread": _median_ratio(rates["seeded_kv"], rates["seeded"]),
    }
    return out


def _median_ratio(a: list[float], b: list[float]) -> float:
    """The median over rounds of a/b, each pair measured back to back."""
    return round(statistics.median(x / y for x, y in zip(a, b)), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=12)
    ap.add_argument("--turns", type=int, default=8, help="turn limit per episode")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    seeds = list(range(args.episodes))
    new, turns, reps = args.max_new_tokens, args.turns, args.repeats
    out: dict[str, object] = vars(args)
    configs = {"shared_stream": (False, False), "seeded": (False, True), "seeded_kv": (True, True)}
    policies = {name: policy(kv, seeded, 1.0, new) for name, (kv, seeded) in configs.items()}
    measured = measure(policies, seeds, turns, reps)
    out.update(measured.pop("ratios"))
    out.update(measured)
    greedy = [play(policy(kv, True, 0.0, new), seeds, turns)[1] for kv in (False, True)]
    out["greedy_identical_with_kv"] = greedy[0] == greedy[1]
    sampled = [play(policy(kv, True, 1.0, new), seeds, turns)[1] for kv in (False, True)]
    out["sampled_identical_with_kv"] = sampled[0] == sampled[1]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
