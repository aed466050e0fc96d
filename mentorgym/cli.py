"""The `mentorgym` command line: list, play, watch, roll out, evaluate, view, train, serve.

Each subcommand is a small function that parses its arguments and calls the library;
nothing here is needed to use mentorgym from Python.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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
        "card": args.card,
    }


def _add_gen(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation (model agents)")
    g.add_argument("--temperature", type=float, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--max-new-tokens", type=int, default=None)
    g.add_argument("--policy-seed", type=int, default=None, help="seed of the model's sampler")
    g.add_argument(
        "--card",
        default=None,
        help="openai: a checkpoint directory whose policy card and tokenizer to use "
        "(default: the `root` the server reports, when it is a local directory)",
    )


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
        type=float,
        default=0.0,
        help="with --executor ray: CPUs each worker reserves (0: workers wait on I/O)",
    )
    p.add_argument(
        "--shared-policy",
        action="store_true",
        help="with --executor ray: one Ray actor holds the agent's model for every worker",
    )
    _add_gen(p)


def _run_episodes(args: argparse.Namespace, out: str | None, resume: bool) -> list:
    from mentorgym.agents.rollout import run
    from mentorgym.agents.specs import load_policy

    if args.executor == "ray":
        from mentorgym.agents.ray_rollout import run_ray

        result = run_ray(
            args.env_id,
            args.agent,
            args.n,
            seed=args.seed,
            env_kwargs=_env_args(args.env_arg),
            teacher=args.teacher,
            beta=args.beta,
            relabel=not args.no_relabel,
            out=out,
            resume=resume,
            concurrency=args.concurrency,
            all_tasks=args.all,
            gen=_gen_args(args),
            address=args.address,
            shared_policy=args.shared_policy,
            cpus_per_worker=args.cpus_per_worker,
        )
        for failure in result.failures:
            print(f"mentorgym: episode {failure.key} lost: {failure.error}", file=sys.stderr)
        return result.trajectories
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
    if args.episode is not None or args.list:
        from mentorgym.play import view

        view(args.path, episode=args.episode)
        return
    from mentorgym.viewer import serve

    serve(args.path, host=args.host, port=args.port, token=args.token)


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

    gen = {k: v for k, v in _gen_args(args).items() if v is not None and k != "card"}
    serve_model(
        args.spec,
        host=args.host,
        port=args.port,
        served_model_name=args.served_model_name,
        api_key=args.api_key or os.environ.get("MENTORGYM_API_KEY"),
        **gen,
    )


def cmd_serve(args: argparse.Namespace) -> None:
    from mentorgym.env_server import ServeSettings, serve

    env_kwargs = _env_args(args.env_arg)
    settings = ServeSettings(
        token=args.token,
        max_sessions=args.max_sessions,
        session_ttl_s=args.session_ttl,
        step_timeout_s=args.step_timeout or None,
        max_message_bytes=args.max_message_bytes,
        env_kwargs={env_id: env_kwargs for env_id in args.env_ids} if env_kwargs else {},
        client_env_args=frozenset(args.client_env_arg),
    )
    serve(args.env_ids, host=args.host, port=args.port, settings=settings)


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


def cmd_swe_grade(args: argparse.Namespace) -> None:
    from mentorgym.envs.swe.grading import grade_log, grade_table, report_json_verdict
    from mentorgym.envs.swe.tasks import read_instance

    instance = read_instance(args.instance, args.id)
    log = Path(args.log).read_text(encoding="utf-8", errors="replace")
    result = grade_log(instance, log, harness=args.harness)
    print(grade_table(instance["instance_id"], result))
    if args.report:
        report = json.loads(Path(args.report).read_text(encoding="utf-8"))
        theirs = report_json_verdict(report, instance["instance_id"])
        agree = "agrees" if theirs == result.resolved else "DISAGREES"
        print(f"the harness's report.json says resolved={theirs}: this grade {agree}")
    if args.json:
        print(json.dumps(result.to_dict()))


def cmd_swe_check(args: argparse.Namespace) -> None:
    from mentorgym.envs.swe.tasks import check_tasks

    lines, missing = check_tasks(args.file, images=not args.no_images)
    print("\n".join(lines))
    if missing:
        raise ConfigError(
            f"{missing} image(s) missing from the local engine; fetch them as shown above"
        )


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

    p = sub.add_parser("view", help="browse trajectories and runs in a web page")
    p.add_argument("path", help="a trajectories JSONL, a run directory or a folder of runs")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--token", default=None, help="required off loopback (default: $MENTORGYM_TOKEN)"
    )
    p.add_argument(
        "--episode", type=int, default=None, help="print one episode of a JSONL in the terminal"
    )
    p.add_argument("--list", action="store_true", help="print a JSONL's episodes as a table")
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
    p.add_argument(
        "--api-key",
        default=None,
        help="require Authorization: Bearer KEY on every route (default $MENTORGYM_API_KEY); "
        "needed to bind beyond loopback",
    )
    _add_gen(p)
    p.set_defaults(func=cmd_serve_model)

    p = sub.add_parser(
        "serve", help="serve envs over OpenEnv's protocol (WebSocket /ws) for remote trainers"
    )
    p.add_argument("env_ids", nargs="+", metavar="ENV_ID", help="the first is also at the root")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--token",
        default=None,
        help="required on every request (Bearer or X-API-Key); default $MENTORGYM_SERVE_TOKEN; "
        "needed to bind beyond loopback",
    )
    p.add_argument("--max-sessions", type=int, default=64)
    p.add_argument(
        "--session-ttl", type=float, default=600.0, help="idle seconds before a session closes"
    )
    p.add_argument(
        "--step-timeout",
        type=float,
        default=1800.0,
        help="seconds a step may run before the episode ends truncated (0: no limit)",
    )
    p.add_argument("--max-message-bytes", type=int, default=4 * 1024 * 1024)
    p.add_argument(
        "--env-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="env kwarg for every served env",
    )
    p.add_argument(
        "--client-env-arg",
        action="append",
        default=[],
        metavar="KEY",
        help="an env kwarg that clients may set in their reset",
    )
    p.set_defaults(func=cmd_serve)

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

    from mentorgym import models

    models.add_parser(sub)

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
    p = swe.add_parser("grade", help="grade a harness's test log as that harness would")
    p.add_argument("log", help="a SWE-bench / SWE-Gym / SWE-smith eval log, or a pytest report")
    p.add_argument("--instance", required=True, help="a JSON or JSONL file holding the instance")
    p.add_argument("--id", default=None, help="which instance of a multi-instance file")
    p.add_argument(
        "--harness",
        choices=["swebench", "swebench4", "swesmith", "swegym", "mentorgym"],
        default=None,
        help="whose rules (default: picked from the instance)",
    )
    p.add_argument("--report", default=None, help="the harness's report.json, to compare")
    p.add_argument("--json", action="store_true", help="also print the grade as JSON")
    p.set_defaults(func=cmd_swe_grade)
    p = swe.add_parser("check", help="validate a SWE task file and list which images are present")
    p.add_argument(
        "file", help="JSONL / JSON of SWE-bench, SWE-Gym or SWE-smith instances, or 'builtin'"
    )
    p.add_argument("--no-images", action="store_true", help="do not ask the Docker engine")
    p.set_defaults(func=cmd_swe_check)
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
