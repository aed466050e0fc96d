"""Commands that play episodes: envs, play, watch, rollout, eval, view."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mentorgym.cli.args import (
    add_env_args,
    add_gen,
    count_trajectories,
    env_args,
    env_id,
    gen_args,
    input_path,
    load_agent,
    non_negative_float,
    non_negative_int,
    output_file,
    port,
    positive_int,
    probability,
    say,
)
from mentorgym.errors import MentorgymError

AGENT_HELP = (
    "agent spec: expert, random, human, replay:FILE, tiny, hf:PATH, openai:URL#MODEL, vllm:MODEL"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("envs", help="list registered environments")
    p.add_argument("--json", action="store_true")
    p.add_argument("--all", action="store_true", help="include non-text Gymnasium envs")
    p.set_defaults(func=cmd_envs)

    p = sub.add_parser("play", help="play an env by hand in the terminal")
    p.add_argument("env_id", type=env_id)
    p.add_argument("--seed", type=non_negative_int, default=None)
    add_env_args(p)
    p.set_defaults(func=cmd_play)

    p = sub.add_parser("watch", help="watch an agent play one episode, turn by turn")
    p.add_argument("env_id", type=env_id)
    p.add_argument("--agent", required=True, help=AGENT_HELP)
    p.add_argument("--seed", type=non_negative_int, default=0)
    add_env_args(p)
    p.add_argument("--delay", type=non_negative_float, default=0.5, help="seconds between turns")
    add_gen(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("rollout", help="run episodes and save trajectories (JSONL)")
    _add_episodes(p)
    p.add_argument("--out", required=True, type=output_file)
    p.add_argument("--resume", action="store_true", help="skip episodes already in --out")
    p.set_defaults(func=cmd_rollout)

    p = sub.add_parser("eval", help="run episodes and print success rate, return and turns")
    _add_episodes(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None, type=output_file, help="also save the trajectories")
    p.set_defaults(func=cmd_eval)

    _register_view(sub)


def _register_view(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="browse trajectories and runs in a web page")
    p.add_argument(
        "path", type=input_path, help="a trajectories JSONL, a run directory or a folder of runs"
    )
    p.add_argument("--port", type=port, default=8765)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--token", default=None, help="required off loopback (default: $MENTORGYM_TOKEN)"
    )
    p.add_argument(
        "--episode",
        type=non_negative_int,
        default=None,
        help="print one episode of a JSONL in the terminal",
    )
    p.add_argument("--list", action="store_true", help="print a JSONL's episodes as a table")
    p.set_defaults(func=cmd_view)


def _add_episodes(p: argparse.ArgumentParser) -> None:
    p.add_argument("env_id", type=env_id)
    p.add_argument("--agent", required=True, help=AGENT_HELP)
    p.add_argument(
        "-n", type=positive_int, default=10, help="number of episodes (seeds seed..seed+n-1)"
    )
    p.add_argument("--all", action="store_true", help="play every task of a finite task set once")
    p.add_argument("--seed", type=non_negative_int, default=0)
    add_env_args(p)
    p.add_argument("--teacher", default=None, help="agent spec of a teacher for a per-turn mixture")
    p.add_argument(
        "--beta", type=probability, default=0.0, help="probability that the teacher writes a turn"
    )
    p.add_argument(
        "--no-relabel", action="store_true", help="do not store the teacher's label of every state"
    )
    p.add_argument("--concurrency", type=positive_int, default=8)
    p.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="where episodes run: this process, or Ray workers (the `ray` extra)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="with --executor ray: the cluster (HOST:PORT of `ray start --head`, or auto); "
        "default: a local Ray for this run",
    )
    p.add_argument(
        "--cpus-per-worker",
        type=non_negative_float,
        default=0.0,
        help="with --executor ray: CPUs each worker reserves (0: workers wait on I/O)",
    )
    p.add_argument(
        "--shared-policy",
        action="store_true",
        help="with --executor ray: one Ray actor holds the agent's model for every worker",
    )
    add_gen(p)


def _run_ray(args: argparse.Namespace, out: str | None, resume: bool) -> list:
    from mentorgym.agents.ray_rollout import run_ray

    result = run_ray(
        args.env_id,
        args.agent,
        args.n,
        seed=args.seed,
        env_kwargs=env_args(args.env_arg),
        teacher=args.teacher,
        beta=args.beta,
        relabel=not args.no_relabel,
        out=out,
        resume=resume,
        concurrency=args.concurrency,
        all_tasks=args.all,
        gen=gen_args(args),
        address=args.address,
        shared_policy=args.shared_policy,
        cpus_per_worker=args.cpus_per_worker,
    )
    for failure in result.failures:
        say(f"episode {failure.key} lost: {failure.error}")
    return result.trajectories


def _run_episodes(args: argparse.Namespace, out: str | None, resume: bool) -> list:
    """Play the episodes; when a mistake stops the run halfway, say what `out` kept."""
    from mentorgym.agents.rollout import run

    before = _check_out(out)
    try:
        if args.executor == "ray":
            return _run_ray(args, out, resume)
        kwargs = env_args(args.env_arg)
        policy = load_agent("--agent", args.agent, gen_args(args))
        teacher = load_agent("--teacher", args.teacher, gen_args(args)) if args.teacher else None
        return run(
            args.env_id,
            policy,
            args.n,
            seed=args.seed,
            env_kwargs=kwargs,
            teacher=teacher,
            beta=args.beta,
            relabel=not args.no_relabel,
            out=out,
            resume=resume,
            concurrency=1 if args.agent == "human" else args.concurrency,
            all_tasks=args.all,
            progress=sys.stderr.isatty() and args.agent != "human",
        )
    except MentorgymError as e:
        written = _episodes_in(out) - before
        if out is not None and written > 0:
            raise MentorgymError(
                f"{e} -- stopped after {written} new episode(s); {out} keeps them: "
                "fix the cause and rerun with `mentorgym rollout ... --resume` to go on"
            ) from e
        raise


def _check_out(out: str | None) -> int:
    """How many episodes `out` already holds; a file there that is not a trajectories JSONL
    (a config, a binary file) is refused before anything is appended to it."""
    if out is None or not Path(out).is_file() or Path(out).stat().st_size == 0:
        return 0
    count_trajectories("--out", out)
    return _episodes_in(out)


def _episodes_in(out: str | None) -> int:
    """Complete lines in `out` (0 when there is none yet)."""
    if out is None or not Path(out).is_file():
        return 0
    with open(out, "rb") as f:
        return sum(1 for line in f if line.endswith(b"\n") and line.strip())


def cmd_envs(args: argparse.Namespace) -> None:
    from mentorgym.envs.registry import describe, list_envs

    specs = list_envs(include_all=args.all)
    rows = [
        {"id": s.id, "description": describe(s), "max_episode_steps": s.max_episode_steps}
        for s in specs
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "max turns", "description")
    for r in rows:
        table.add_row(r["id"], str(r["max_episode_steps"] or "-"), r["description"])
    Console().print(table)


def cmd_rollout(args: argparse.Namespace) -> None:
    from mentorgym.agents.rollout import summarize

    trajs = _run_episodes(args, out=args.out, resume=args.resume)
    print(json.dumps({**summarize(trajs), "out": args.out}))


def cmd_eval(args: argparse.Namespace) -> None:
    from mentorgym.agents.rollout import summarize

    trajs = _run_episodes(args, out=args.out, resume=False)
    stats = summarize(trajs)
    # Say where agent code ran (envs that run it report a "sandbox" in their step info).
    backends = sorted(
        {str(t.info["sandbox"]) for tr in trajs for t in tr.turns if "sandbox" in t.info}
    )
    if backends:
        print(f"agent code ran in the {', '.join(backends)} sandbox", file=sys.stderr)
    if args.json:
        print(json.dumps(stats))
        return
    _print_stats(stats, f"{args.env_id} · {args.agent}")


def _print_stats(stats: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("metric", "value", title=title)
    for k, v in stats.items():
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    Console().print(table)


def cmd_play(args: argparse.Namespace) -> None:
    from mentorgym.play import play

    play(args.env_id, seed=args.seed, env_kwargs=env_args(args.env_arg))


def cmd_watch(args: argparse.Namespace) -> None:
    from mentorgym.play import watch

    watch(
        args.env_id,
        load_agent("--agent", args.agent, gen_args(args)),
        seed=args.seed,
        env_kwargs=env_args(args.env_arg),
        delay_s=args.delay,
    )


def cmd_view(args: argparse.Namespace) -> None:
    if args.episode is not None or args.list:
        from mentorgym.play import view

        view(args.path, episode=args.episode)
        return
    from mentorgym.viewer import serve

    serve(args.path, host=args.host, port=args.port, token=args.token)
