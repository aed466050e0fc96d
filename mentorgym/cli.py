"""The `mentorgym` command line: list, play, watch, roll out, evaluate, view, train, serve.

Each subcommand is a small function that parses its arguments and calls the library;
nothing here is needed to use mentorgym from Python.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from gymnasium import error as gym_error

from mentorgym.errors import ConfigError, MentorgymError


def _env_args(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are parsed as JSON when they can be (numbers, lists, bools)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env-arg {pair!r}: write key=value, e.g. --env-arg num_boxes=2")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    if isinstance(out.get("dim_room"), list):
        out["dim_room"] = tuple(out["dim_room"])
    return out


def _gen_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.policy_seed,
    }


def _add_gen(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation (model agents)")
    g.add_argument("--temperature", type=float, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--max-new-tokens", type=int, default=None)
    g.add_argument("--policy-seed", type=int, default=None, help="seed of the model's sampler")


def _add_episodes(p: argparse.ArgumentParser) -> None:
    p.add_argument("env_id")
    p.add_argument(
        "--agent",
        required=True,
        help="agent spec: expert, random, human, replay:FILE, tiny, hf:PATH, openai:URL#MODEL, vllm:MODEL",
    )
    p.add_argument("-n", type=int, default=10, help="number of episodes (seeds seed..seed+n-1)")
    p.add_argument("--all", action="store_true", help="play every task of a finite task set once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--teacher", default=None, help="agent spec of a teacher for a per-turn mixture")
    p.add_argument(
        "--beta", type=float, default=0.0, help="probability that the teacher writes a turn"
    )
    p.add_argument(
        "--no-relabel", action="store_true", help="do not store the teacher's label of every state"
    )
    p.add_argument("--concurrency", type=int, default=8)
    _add_gen(p)


def _run_episodes(args: argparse.Namespace, out: str | None, resume: bool) -> list:
    from mentorgym.agents.rollout import run
    from mentorgym.agents.specs import load_policy

    policy = load_policy(args.agent, **_gen_args(args))
    teacher = load_policy(args.teacher, **_gen_args(args)) if args.teacher else None
    return run(
        args.env_id,
        policy,
        args.n,
        seed=args.seed,
        env_kwargs=_env_args(args.env_arg),
        teacher=teacher,
        beta=args.beta,
        relabel=not args.no_relabel,
        out=out,
        resume=resume,
        concurrency=1 if args.agent == "human" else args.concurrency,
        all_tasks=args.all,
        progress=sys.stderr.isatty() and args.agent != "human",
    )


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
    from rich.console import Console
    from rich.table import Table

    table = Table("metric", "value", title=f"{args.env_id} · {args.agent}")
    for k, v in stats.items():
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    Console().print(table)


def cmd_play(args: argparse.Namespace) -> None:
    from mentorgym.play import play

    play(args.env_id, seed=args.seed, env_kwargs=_env_args(args.env_arg))


def cmd_watch(args: argparse.Namespace) -> None:
    from mentorgym.agents.specs import load_policy
    from mentorgym.play import watch

    watch(
        args.env_id,
        load_policy(args.agent, **_gen_args(args)),
        seed=args.seed,
        env_kwargs=_env_args(args.env_arg),
        delay_s=args.delay,
    )


def cmd_view(args: argparse.Namespace) -> None:
    from mentorgym.play import view

    view(args.file, episode=args.episode)


def cmd_model_tiny(args: argparse.Namespace) -> None:
    from mentorgym.agents.tiny import build_tiny

    print(
        build_tiny(
            args.out,
            size=args.size,
            env_ids=args.envs or None,
            seed=args.seed,
            tokenizer_from=args.tokenizer_from,
        )
    )


def cmd_serve_model(args: argparse.Namespace) -> None:
    from mentorgym.server import serve_model

    gen = {k: v for k, v in _gen_args(args).items() if v is not None}
    serve_model(
        args.spec, host=args.host, port=args.port, served_model_name=args.served_model_name, **gen
    )


def cmd_train(args: argparse.Namespace) -> None:
    from mentorgym.training.entry import train_from_config

    run_dir = train_from_config(
        args.config, args.set, out=args.out, resume=args.resume, dry_run=args.dry_run
    )
    print(f"run dir: {run_dir}")


def cmd_sandbox_reap(args: argparse.Namespace) -> None:
    from mentorgym.sandboxes.docker import reap

    print(f"removed {reap(all_runs=args.all)} container(s)")


def cmd_sandbox_build_base(args: argparse.Namespace) -> None:
    from mentorgym.sandboxes.image import build_base

    print(build_base(tag=args.tag, force=args.force))


def cmd_swe_synth(args: argparse.Namespace) -> None:
    from mentorgym.envs.swe.synth import synthesize

    tasks = synthesize(
        Path(args.repo),
        args.n,
        Path(args.out),
        seed=args.seed,
        image=args.image,
        sandbox=args.sandbox,
    )
    print(f"wrote {len(tasks)} validated task(s) to {args.out}")


def cmd_swe_export_preds(args: argparse.Namespace) -> None:
    from mentorgym.envs.swe.preds import export_predictions

    k = export_predictions(args.trajectories, args.out, model_name=args.model_name)
    print(f"wrote {k} prediction(s) to {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mentorgym", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("envs", help="list registered environments")
    p.add_argument("--json", action="store_true")
    p.add_argument("--all", action="store_true", help="include non-text Gymnasium envs")
    p.set_defaults(func=cmd_envs)

    p = sub.add_parser("play", help="play an env by hand in the terminal")
    p.add_argument("env_id")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_play)

    p = sub.add_parser("watch", help="watch an agent play one episode, turn by turn")
    p.add_argument("env_id")
    p.add_argument("--agent", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--delay", type=float, default=0.5, help="seconds between turns")
    _add_gen(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("rollout", help="run episodes and save trajectories (JSONL)")
    _add_episodes(p)
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true", help="skip episodes already in --out")
    p.set_defaults(func=cmd_rollout)

    p = sub.add_parser("eval", help="run episodes and print success rate, return and turns")
    _add_episodes(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None, help="also save the trajectories")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("view", help="browse saved trajectories")
    p.add_argument("file")
    p.add_argument("--episode", type=int, default=None, help="show one episode in full")
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("train", help="train from a YAML config")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="run directory")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a killed run")
    p.add_argument(
        "--dry-run", action="store_true", help="validate and build everything but the weights"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("serve-model", help="serve a model over an OpenAI-compatible HTTP API")
    p.add_argument("spec")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--served-model-name",
        default=None,
        help="the model name clients ask for (default: the spec)",
    )
    _add_gen(p)
    p.set_defaults(func=cmd_serve_model)

    model = sub.add_parser("model", help="models").add_subparsers(
        dest="model_command", required=True
    )
    p = model.add_parser("tiny", help="build the offline tiny model and tokenizer")
    p.add_argument("--out", required=True)
    p.add_argument("--size", choices=["tiny", "base", "small"], default="tiny")
    p.add_argument(
        "--envs", nargs="*", default=None, help="env ids whose text trains the tokenizer"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tokenizer-from",
        default=None,
        metavar="DIR",
        help="reuse this checkpoint's tokenizer (a teacher sharing a student's token ids)",
    )
    p.set_defaults(func=cmd_model_tiny)

    sandbox = sub.add_parser("sandbox", help="Docker sandboxes").add_subparsers(
        dest="sandbox_command", required=True
    )
    p = sandbox.add_parser("reap", help="remove containers whose owner process is gone")
    p.add_argument("--all", action="store_true", help="remove every mentorgym container")
    p.set_defaults(func=cmd_sandbox_reap)
    p = sandbox.add_parser("build-base", help="build the base image offline (cached)")
    p.add_argument("--tag", default="mentorgym/base:latest")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_sandbox_build_base)

    swe = sub.add_parser("swe", help="SWE tasks").add_subparsers(dest="swe_command", required=True)
    p = swe.add_parser("synth", help="synthesize tasks from a local Python repository")
    p.add_argument("--repo", required=True)
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sandbox",
        choices=["docker", "local"],
        default="docker",
        help="where tests run; local is no security boundary",
    )
    p.add_argument(
        "--image",
        default=None,
        help="an image holding this repository at /testbed (default: built from the repo)",
    )
    p.set_defaults(func=cmd_swe_synth)
    p = swe.add_parser("export-preds", help="trajectories to swebench predictions JSONL")
    p.add_argument("trajectories")
    p.add_argument("--out", required=True)
    p.add_argument("--model-name", default="mentorgym")
    p.set_defaults(func=cmd_swe_export_preds)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except (MentorgymError, gym_error.Error) as e:
        print(f"mentorgym: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mentorgym: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
