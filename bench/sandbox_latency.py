"""Sandbox latency, measured against peers in the same run; prints ratios.

    python bench/sandbox_latency.py [--image mentorgym/base:latest] [--reps 30] [--swe]

1. reset: acquire() from a warm SandboxPool vs a cold create + start + first command;
2. exec round trip of `true`: DockerSandbox.exec vs `docker exec C true` (subprocess) and
   vs the SDK's exec_run;
3. teardown: close();
4. with --swe: 16 SWE episodes by the expert at concurrency 16 vs 1 (needs the SWE env,
   the rollout engine and the `expert` policy spec).

Goals from the issue: pool reset p50 < 50 ms; exec >= 10x faster than `docker exec`;
teardown < 100 ms; SWE concurrency speed-up >= 3x.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable

from mentorgym.sandboxes.docker import DockerSandbox, client, drain_removals, engine_available
from mentorgym.sandboxes.pool import SandboxPool


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def timed(fn: Callable[[], object], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def show(name: str, ms: list[float]) -> tuple[float, float]:
    p50, p95 = statistics.median(ms), pct(ms, 0.95)
    print(f"  {name:<34} p50 {p50:8.2f} ms   p95 {p95:8.2f} ms   (n={len(ms)})")
    return p50, p95


def bench_reset(image: str, reps: int) -> tuple[list[float], list[float]]:
    print("1. reset latency")
    cold: list[float] = []
    for _ in range(max(5, reps // 3)):
        t = time.perf_counter()
        box = DockerSandbox(image)
        box.exec("true")
        cold.append((time.perf_counter() - t) * 1000)
        box.close()
    warm: list[float] = []
    closes: list[float] = []
    closes_async: list[float] = []
    with SandboxPool(image, size=2) as pool:
        for _ in range(reps):
            # Let the filler catch up, as it does between episodes that take seconds.
            deadline = time.monotonic() + 30
            while pool.idle() < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            t = time.perf_counter()
            box = pool.acquire()
            warm.append((time.perf_counter() - t) * 1000)
            box.exec("true")
            wait = len(closes) <= len(closes_async)
            t = time.perf_counter()
            box.close(wait=wait)
            (closes if wait else closes_async).append((time.perf_counter() - t) * 1000)
    drain_removals()
    c50, c95 = show("cold create+start+first command", cold)
    w50, w95 = show("warm pool acquire()", warm)
    print(
        f"  ratio cold/warm: p50 {c50 / w50:.0f}x  p95 {c95 / w95:.0f}x   (goal: warm p50 < 50 ms)"
    )
    return closes, closes_async


def bench_exec(image: str, reps: int) -> None:
    print("2. exec round trip of `true`")
    with DockerSandbox(image) as box:
        box.exec("true")
        ours = timed(lambda: box.exec("true"), reps * 10)
        sdk = timed(lambda: box.container.exec_run(["true"]), reps)
        cli: list[float] = []
        if shutil.which("docker"):
            cli = timed(
                lambda: subprocess.run(["docker", "exec", box.id, "true"], check=True), reps
            )
    o50, o95 = show("DockerSandbox.exec", ours)
    s50, s95 = show("SDK container.exec_run", sdk)
    print(f"  ratio exec_run/ours: p50 {s50 / o50:.0f}x  p95 {s95 / o95:.0f}x")
    if cli:
        d50, d95 = show("`docker exec C true` subprocess", cli)
        print(
            f"  ratio docker-exec/ours: p50 {d50 / o50:.0f}x  p95 {d95 / o95:.0f}x   (goal >= 10x)"
        )
    else:
        print("  `docker exec`: no docker CLI on PATH, not measured")


def bench_swe(episodes: int) -> None:
    print(f"4. SWE episodes by the expert, {episodes} episodes")
    try:
        import mentorgym.envs.swe  # noqa: F401
        from mentorgym.agents.rollout import run
        from mentorgym.agents.specs import load_policy

        policy = load_policy("expert")
    except (ImportError, AttributeError) as e:
        print(f"  not available yet ({e})")
        return
    walls = {}
    for conc in (1, episodes):
        t = time.perf_counter()
        trajs = run(
            "mentorgym/SWE-v0",
            policy,
            n=episodes,
            env_kwargs={"tasks": "builtin"},
            concurrency=conc,
            all_tasks=False,
            seed=0,
        )
        walls[conc] = time.perf_counter() - t
        ok = sum(bool(tr.success) for tr in trajs)
        print(f"  concurrency {conc:>2}: {walls[conc]:7.2f} s   success {ok}/{len(trajs)}")
    speedup = walls[1] / walls[episodes]
    print(f"  speed-up concurrency {episodes} vs 1: {speedup:.2f}x   (goal >= 3x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--image", default="mentorgym/base:latest")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--swe", action="store_true", help="also run the 16-episode SWE comparison")
    ap.add_argument("--episodes", type=int, default=16)
    args = ap.parse_args()
    reason = engine_available()
    if reason:
        raise SystemExit(reason)
    client().images.get(args.image)
    closes, closes_async = bench_reset(args.image, args.reps)
    bench_exec(args.image, args.reps)
    print("3. teardown")
    t50, _ = show("close() (force remove, waits)", closes)
    a50, _ = show("close(wait=False) (background)", closes_async)
    print(
        f"  goal < 100 ms: waiting {'met' if t50 < 100 else 'NOT met'}, background "
        f"{'met' if a50 < 100 else 'NOT met'}"
    )
    if args.swe:
        bench_swe(args.episodes)
    else:
        print("4. SWE concurrency: pass --swe to run it")


if __name__ == "__main__":
    main()
