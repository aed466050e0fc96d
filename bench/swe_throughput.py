"""Where a SWE episode's time goes, at 1 and at N concurrent episodes, with and without
the grade cache.

    python bench/swe_throughput.py [--episodes 16] [--concurrency 16]

Runs the expert (gold patch, then submit) on the builtin tasks through `agents.rollout.run`,
once per setting, and times the env's phases from inside (summed over episodes, so at
concurrency N they add up to more than the wall time):
  reset      taking a warm container and checking out the task (`SWEEnv._acquire`, `_checkout`)
  act        the agent's bash call (`git apply` of the gold patch) via the persistent shell
  review     the agent's tree against the pristine listing, the allowlist, the changed files'
             bytes and the capability check (`review_tree`; `review_patch` before the redesign)
  grade      the fresh grading container: checkout, the graded files, pytest under the
             supervisor and the guard plugin (`_run_tests`)
Settings: `plain` (every episode runs its tests) at concurrency 1 and N, then `cache` at
concurrency N, where each task's second and later episodes reuse the grade of the same
patch (the builtin set has 13 tasks, so 16 episodes repeat 3 of them; an RL batch of G
samples per task repeats far more). The grade cache is emptied before each setting.
Prints wall times and speed-ups against concurrency 1, plain, measured in the same run, and
how busy the machine's cores were during each setting (from /proc/stat, so the Docker engine
and the containers count): a setting that keeps a share u of the cores busy at concurrency 1
can gain at most about 1/u from concurrency, whatever the env does.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

_totals: dict[str, float] = defaultdict(float)
_lock = threading.Lock()


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            with _lock:
                _totals[name] += time.perf_counter() - t

    return wrapper


def instrument() -> None:
    from mentorgym.envs.swe import env as swe_env
    from mentorgym.envs.swe import tools

    cls = swe_env.SWEEnv
    cls.reset = _timed("reset", cls.reset)  # type: ignore[method-assign]
    review = "review_tree" if hasattr(cls, "review_tree") else "review_patch"  # before/after
    setattr(cls, review, _timed("review", getattr(cls, review)))
    cls._run_tests = _timed("grade", cls._run_tests)  # type: ignore[method-assign]
    tools.BashTool.__call__ = _timed("act", tools.BashTool.__call__)  # type: ignore[method-assign]


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat: the Docker engine, the
    containers' pytest and this process alike."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def one_setting(episodes: int, concurrency: int, cache: bool) -> float:
    from mentorgym.agents.rollout import run
    from mentorgym.agents.specs import load_policy
    from mentorgym.envs.swe import env as swe_env

    swe_env._GRADES.clear()
    _totals.clear()
    busy0, total0 = _cpu_ticks()
    t = time.perf_counter()
    trajs = run(
        "mentorgym/SWE-v0",
        load_policy("expert"),
        n=episodes,
        env_kwargs={"tasks": "builtin", "grade_cache": cache},
        concurrency=concurrency,
        all_tasks=False,
        seed=0,
    )
    wall = time.perf_counter() - t
    busy1, total1 = _cpu_ticks()
    cores_busy = (busy1 - busy0) / max(total1 - total0, 1)
    ok = sum(bool(tr.success) for tr in trajs)
    phases = "  ".join(f"{k} {v:6.1f}s" for k, v in sorted(_totals.items()))
    label = f"{'cache' if cache else 'plain'} x{concurrency}"
    print(
        f"  {label:<10} wall {wall:7.2f} s  cores busy {cores_busy:4.0%}  "
        f"resolved {ok}/{len(trajs)}   summed: {phases}"
    )
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    instrument()
    n, c = args.episodes, args.concurrency
    print(f"SWE expert episodes on the builtin tasks: {n} episodes")
    one_setting(2, 2, False)  # warm-up: builds the images and fills the container pools
    base = one_setting(n, 1, False)
    plain = one_setting(n, c, False)
    cached = one_setting(n, c, True)
    print(f"  speed-up plain x{c} vs x1: {base / plain:.2f}x")
    print(f"  speed-up cache x{c} vs plain x1: {base / cached:.2f}x   (goal >= 3x)")


if __name__ == "__main__":
    main()
