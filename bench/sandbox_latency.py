"""Sandbox latency, measured against peers in the same run; prints ratios.

    python bench/sandbox_latency.py [--image mentorgym/base:latest] [--reps 30] [--swe]
    python bench/sandbox_latency.py --only tool,concurrent,math   # the isolation costs

1. reset: acquire() from a warm SandboxPool vs a cold create + start + first command;
2. exec round trip of `true`: DockerSandbox.exec vs `docker exec C true` (subprocess) and
   vs the SDK's exec_run;
3. teardown: close();
4. with --swe: 16 SWE episodes by the expert at concurrency 16 vs 1 (needs the SWE env,
   the rollout engine and the `expert` policy spec);
5. tool: the math env's python-tool round trip (`python3 -c 'print(1)'` through `exec`)
   in each backend as MathTools builds it (local, bwrap, docker pool), against local;
6. concurrent: `--concurrent` (128) sandboxes made from 16 threads, then every one running
   `true` at once, `--concurrent-reps` times: exec latency p50/p95/p99, per backend;
7. math: wall time of `--math-episodes` expert episodes of MathTools-v0 with the default
   sandbox against `sandbox=local` (and bwrap); with `--train-config`, also `mentorgym
   train` of that config both ways (`--train-set` overrides passed on, e.g. iterations=1).

Goals from the issues: pool reset p50 < 50 ms; exec >= 10x faster than `docker exec`;
teardown < 100 ms; SWE concurrency speed-up >= 3x; the default (isolated) sandbox adds at
most 10 ms per python call over local.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

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


def show3(name: str, ms: list[float]) -> None:
    print(
        f"  {name:<34} p50 {statistics.median(ms):8.2f} ms   p95 {pct(ms, 0.95):8.2f} ms   "
        f"p99 {pct(ms, 0.99):8.2f} ms   (n={len(ms)})"
    )


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


def _backends() -> list[str]:
    from mentorgym.sandboxes.bwrap import bwrap_available
    from mentorgym.sandboxes.choice import _docker_reason

    out = ["local"]
    for name, reason in (("bwrap", bwrap_available()), ("docker", _docker_reason(IMAGE[0]))):
        if reason is None:
            out.append(name)
        else:
            print(f"  {name}: not available ({reason})")
    return out


IMAGE = ["mentorgym/base:latest"]


def bench_tool(reps: int) -> None:
    from mentorgym.sandboxes.choice import choose

    print("5. python-tool round trip (`python3 -c 'print(1)'` through exec), backends interleaved")
    default = choose("auto").backend
    from mentorgym.sandboxes.bwrap import sandbox_python

    boxes = {backend: choose(backend).factory() for backend in _backends()}
    # Local mode's python3 is this interpreter (a virtualenv's, slower to start where
    # site-packages are heavy); bwrap's is the system one. "local-sys" runs the system
    # python3 locally, so that the sandbox's own cost is told apart from the interpreter's.
    commands = {b: "python3 -c 'print(1)'" for b in boxes}
    commands["local-sys"] = f"{sandbox_python()} -c 'print(1)'"
    boxes = {"local": boxes["local"], "local-sys": boxes["local"], **boxes}
    calls: dict[str, list[float]] = {b: [] for b in boxes}
    trues: dict[str, list[float]] = {b: [] for b in boxes}
    try:
        for backend, box in boxes.items():
            box.exec(commands[backend])  # warm: first shell start, page cache
        # One call of each backend in turn, so that all see the same load on the machine.
        for _ in range(reps):
            for backend, box in boxes.items():
                calls[backend] += timed(lambda b=box, c=commands[backend]: b.exec(c), 1)
                trues[backend] += timed(lambda b=box: b.exec("true"), 1)
    finally:
        for box in set(boxes.values()):
            box.close()
    p50s: dict[str, float] = {}
    for backend in boxes:
        p50s[backend], _ = show(f"{backend}: python call", calls[backend])
        show(f"{backend}: `true`", trues[backend])
    for backend, p50 in p50s.items():
        if backend.startswith("local"):
            continue
        tag = " (the default)" if backend == default else ""
        for base in ("local", "local-sys"):
            extra = p50 - p50s[base]
            verdict = "met" if extra <= 10 else "NOT met"
            print(
                f"  {backend}{tag} over {base}: {extra:+.2f} ms per call at p50 "
                f"({p50 / p50s[base]:.2f}x)   goal <= +10 ms: {verdict}"
            )


def bench_concurrent(n: int, threads: int, reps: int) -> None:
    from mentorgym.sandboxes.choice import choose

    print(f"6. exec of `true` with {n} sandboxes running at once ({reps} rounds)")
    for backend in _backends():
        if backend == "local":
            continue
        factory = choose(backend).factory
        t = time.perf_counter()
        boxes: list = []
        errors: list[str] = []
        lock = threading.Lock()

        def make(_: int, factory=factory, lock=lock, errors=errors, boxes=boxes) -> None:
            try:
                box = factory()
            except Exception as e:  # counted and shown: the bench measures, it does not stop
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                return
            with lock:
                boxes.append(box)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(make, range(n)))
        made_s = time.perf_counter() - t
        latencies: list[float] = []
        start = threading.Barrier(len(boxes) or 1)

        def run(box, start=start, errors=errors, lock=lock) -> list[float]:
            out = []
            try:
                start.wait(timeout=300)  # every sandbox starts its calls together
            except threading.BrokenBarrierError:
                pass
            for _ in range(reps):
                t0 = time.perf_counter()
                try:
                    box.exec("true", timeout=60)
                except Exception as e:  # counted and shown, like creation errors
                    with lock:
                        errors.append(f"exec: {type(e).__name__}: {e}")
                    continue
                out.append((time.perf_counter() - t0) * 1000)
            return out

        with ThreadPoolExecutor(max(1, len(boxes))) as pool:
            for ms in pool.map(run, boxes):
                latencies += ms
        t = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda b: b.close(), boxes))
        close_s = time.perf_counter() - t
        print(
            f"  {backend}: {len(boxes)}/{n} made from {threads} threads in {made_s:.1f} s, "
            f"closed in {close_s:.1f} s, {len(errors)} error(s)"
            + (f" (first: {errors[0][:200]})" if errors else "")
        )
        if latencies:
            show3(f"{backend}: exec at {len(boxes)} concurrent", latencies)
    if "docker" in _backends():
        from mentorgym.sandboxes.pool import close_all_pools

        close_all_pools()  # the warm pool's idle containers are not leftovers; drop them first
        drain_removals()  # close() left the removals to the background
        left = client().api.containers(
            all=True, filters={"label": f"mentorgym.owner_pid={os.getpid()}"}
        )
        print(f"  docker containers left running by this process: {len(left)}")


def bench_math(episodes: int, train_config: str | None, train_set: list[str]) -> None:
    from mentorgym.agents.rollout import run
    from mentorgym.agents.specs import load_policy
    from mentorgym.sandboxes.choice import choose

    default = choose("auto").backend
    print(f"7. MathTools-v0, {episodes} expert episodes (default sandbox: {default})")
    walls: dict[str, float] = {}
    for sandbox in dict.fromkeys(["auto", "local", "bwrap"]):
        if sandbox == "bwrap" and ("bwrap" not in _backends() or default == "bwrap"):
            continue
        kwargs = {"sandbox": sandbox}
        run("mentorgym/MathTools-v0", load_policy("expert"), n=2, env_kwargs=kwargs)  # warm
        t = time.perf_counter()
        trajs = run("mentorgym/MathTools-v0", load_policy("expert"), n=episodes, env_kwargs=kwargs)
        walls[sandbox] = time.perf_counter() - t
        ok = sum(bool(tr.success) for tr in trajs)
        label = f"{sandbox} ({default})" if sandbox == "auto" else sandbox
        print(f"  {label:<16} {walls[sandbox]:7.2f} s   success {ok}/{len(trajs)}")
    print(f"  default / local wall time: {walls['auto'] / walls['local']:.2f}x")
    if train_config:
        for sandbox in ("auto", "local"):
            out = tempfile.mkdtemp(prefix="mentorgym-bench-train-")
            sets = [f"--set={s}" for s in train_set]
            cmd = [sys.executable, "-m", "mentorgym.cli", "train", train_config, "--out", out]
            cmd += [*sets, f"--set=env_kwargs={{'sandbox': '{sandbox}'}}"]
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t
            status = "ok" if r.returncode == 0 else f"FAILED: {r.stderr.strip()[-300:]}"
            print(f"  train {train_config} sandbox={sandbox}: {wall:7.1f} s ({status})")
            shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--image", default="mentorgym/base:latest")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--swe", action="store_true", help="also run the 16-episode SWE comparison")
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument(
        "--only",
        default="reset,exec,teardown,tool,concurrent,math",
        help="comma-separated parts to run (reset,exec,teardown,tool,concurrent,math)",
    )
    ap.add_argument("--concurrent", type=int, default=128)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--concurrent-reps", type=int, default=5)
    ap.add_argument("--math-episodes", type=int, default=50)
    ap.add_argument("--train-config", default=None)
    ap.add_argument("--train-set", action="append", default=[])
    args = ap.parse_args()
    only = set(args.only.split(","))
    IMAGE[0] = args.image
    warnings.simplefilter("ignore")  # the local sandbox's warning, once per backend choice
    if only & {"tool", "concurrent", "math"}:
        if "tool" in only:
            bench_tool(args.reps * 2)
        if "concurrent" in only:
            bench_concurrent(args.concurrent, args.threads, args.concurrent_reps)
        if "math" in only:
            bench_math(args.math_episodes, args.train_config, args.train_set)
        if not only & {"reset", "exec", "teardown"}:
            return
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
