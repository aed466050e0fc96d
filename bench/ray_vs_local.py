"""Episodes per second on the SWE builtin tasks: the local rollout engine against Ray workers,
both at the same concurrency, with the gold-patch expert (so each episode edits, submits and
is graded in a fresh container).

    python bench/ray_vs_local.py --concurrency 16            # every builtin task, once each

Ray runs on this machine (a local `ray.init`, object store 200 MB); its start-up is timed
apart, while the workers' own start-up (one process each, importing mentorgym) is in
its episodes/s. Both runs use the same Docker engine, so on one machine Ray can only add
overhead: the figure says what the executor costs, and a cluster adds engines.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from mentorgym.agents.ray_rollout import LOCAL_OBJECT_STORE_BYTES, run_ray
from mentorgym.agents.rollout import run
from mentorgym.agents.scripted import ExpertPolicy

ENV = "mentorgym/SWE-v0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument(
        "--pool-size",
        type=int,
        default=None,
        help="SWE warm containers per image and process (default: the env's, 2); every Ray "
        "worker is its own process with its own pools",
    )
    args = ap.parse_args()
    kwargs = {} if args.pool_size is None else {"pool_size": args.pool_size}
    import ray

    t0 = time.perf_counter()
    local = run(
        ENV, ExpertPolicy(), all_tasks=True, concurrency=args.concurrency, env_kwargs=kwargs
    )
    local_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    ray.init(object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=False)
    ray_start_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        on_ray = run_ray(
            ENV, "expert", all_tasks=True, concurrency=args.concurrency, env_kwargs=kwargs
        )
        ray_s = time.perf_counter() - t0
    finally:
        ray.shutdown()
    n = len(local)
    print(
        json.dumps(
            {
                "episodes": n,
                "pool_size": args.pool_size,
                "concurrency": args.concurrency,
                "cpus": os.cpu_count(),
                "local_s": round(local_s, 1),
                "local_episodes_per_s": round(n / local_s, 3),
                "ray_init_s": round(ray_start_s, 1),
                "ray_s": round(ray_s, 1),
                "ray_episodes_per_s": round(len(on_ray.trajectories) / ray_s, 3),
                "ray_over_local": round((len(on_ray.trajectories) / ray_s) / (n / local_s), 2),
                "local_success": sum(t.success for t in local) / n,
                "ray_success": sum(t.success for t in on_ray.trajectories) / max(1, n),
                "ray_failures": len(on_ray.failures),
            }
        )
    )


if __name__ == "__main__":
    main()
