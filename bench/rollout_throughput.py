"""Rollout throughput: the same 32 full-history Sokoban episodes with the tiny model through
`vllm:` (asynchronous engine, continuous batching, prefix caching) and through today's `hf:`
lockstep engine (one batched `generate` per round), in one run. Also the asynchronous engine
with `hf:` behind its batching queue, and the resident memory the vLLM engine adds to this
process. Prints turns per second and the ratios against `hf:` lockstep.

    python bench/rollout_throughput.py [--episodes 32] [--max-new-tokens 12] [--no-vllm]
                                       [--seed-cost-rounds 3]

Engine start-up and one warm-up call per backend are outside the timings.

`--seed-cost-rounds N` also measures what reproducible sampling costs `vllm:`: N rounds, each
playing the episodes with a seed per request (`reseed(0)`: draws depend on run seed, episode and
turn only) and then with vLLM's own unseeded draws (`reseed(None)`, the engine before
per-episode seeds) on the same engine; the ratio is the median over rounds of seeded /
unseeded turns/s. (`bench/hf_seeds_kv.py` measures the same for `hf:`.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import psutil

from mentorgym.agents.hf import HFPolicy
from mentorgym.agents.rollout import run
from mentorgym.agents.tiny import default_tiny_path

ENV = "mentorgym/Sokoban-v0"


def timed(policy, seeds: list[int], engine: str) -> dict[str, float]:
    t0 = time.perf_counter()
    trajs = run(ENV, policy, seeds=seeds, concurrency=len(seeds), engine=engine)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    turns = sum(len(t.turns) for t in trajs)
    return {"turns": turns, "s": round(seconds, 2), "turns_per_s": round(turns / seconds, 2)}


def seed_cost(engine, seeds: list[int], rounds: int) -> dict[str, float]:
    """Seeded against unseeded `vllm:` sampling on one engine, interleaved round by round."""
    rates: dict[str, list[float]] = {"seeded": [], "unseeded": []}
    for _ in range(rounds):
        for name, seed in (("seeded", 0), ("unseeded", None)):
            engine.reseed(seed)
            rates[name].append(timed(engine, seeds, "async")["turns_per_s"])
    engine.reseed(0)
    ratios = [a / b for a, b in zip(rates["seeded"], rates["unseeded"])]
    return {
        "seeded_turns_per_s": statistics.median(rates["seeded"]),
        "unseeded_turns_per_s": statistics.median(rates["unseeded"]),
        "seeded_vs_unseeded": round(statistics.median(ratios), 2),
    }


def rss_gib() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / 2**30


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--no-vllm", action="store_true", help="measure the hf: engines only")
    p.add_argument(
        "--no-hf-async", action="store_true", help="skip hf: through the asynchronous engine"
    )
    p.add_argument(
        "--seed-cost-rounds",
        type=int,
        default=0,
        help="rounds of vllm: seeded against unseeded sampling (0: skip)",
    )
    args = p.parse_args()
    tiny = str(default_tiny_path())
    seeds = list(range(args.episodes))
    gen = {"temperature": 1.0, "seed": 0}
    hf = HFPolicy(tiny, max_new_tokens=args.max_new_tokens, dtype="float32", **gen)
    run(ENV, hf, seeds=seeds[:2])  # warm-up
    out: dict[str, object] = {"episodes": args.episodes, "max_new_tokens": args.max_new_tokens}
    out["hf_lockstep"] = timed(hf, seeds, "lockstep")
    base = out["hf_lockstep"]["turns_per_s"]  # type: ignore[index]
    if not args.no_hf_async:
        out["hf_async"] = timed(hf, seeds, "async")
        out["hf_async_vs_hf_lockstep"] = round(out["hf_async"]["turns_per_s"] / base, 2)  # type: ignore[index]
    if not args.no_vllm:
        from mentorgym.agents.vllm_engine import VLLMPolicy

        before = rss_gib()
        t0 = time.perf_counter()
        engine = VLLMPolicy(tiny, max_tokens=args.max_new_tokens, max_model_len=2048, **gen)
        out["vllm_start_s"] = round(time.perf_counter() - t0, 1)
        out["vllm_engine_rss_gib"] = round(rss_gib() - before, 2)
        out["vllm_kv_cache_gib"] = float(os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
        run(ENV, engine, seeds=seeds[:2])  # warm-up
        out["vllm_async"] = timed(engine, seeds, "async")
        out["vllm_vs_hf_lockstep"] = round(out["vllm_async"]["turns_per_s"] / base, 2)  # type: ignore[index]
        if args.seed_cost_rounds:
            out["vllm_seed_cost"] = seed_cost(engine, seeds, args.seed_cost_rounds)
        engine.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
