"""The servers: `serve` (envs over OpenEnv's protocol) and `serve-model` (a model over
OpenAI's). `view`, the third server, is with the episode commands."""

from __future__ import annotations

import argparse
import os

from mentorgym.cli.args import (
    add_env_args,
    add_gen,
    env_args,
    env_id,
    gen_args,
    non_negative_float,
    port,
    positive_float,
    positive_int,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve-model", help="serve a model over an OpenAI-compatible HTTP API")
    p.add_argument("spec")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port, default=8000)
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
    add_gen(p)
    p.set_defaults(func=cmd_serve_model)
    _register_serve(sub)


def _register_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve envs over OpenEnv's protocol (WebSocket /ws) for remote trainers"
    )
    p.add_argument(
        "env_ids", nargs="+", metavar="ENV_ID", type=env_id, help="the first is also at the root"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port, default=8000)
    p.add_argument(
        "--token",
        default=None,
        help="required on every request (Bearer or X-API-Key); default $MENTORGYM_SERVE_TOKEN; "
        "needed to bind beyond loopback",
    )
    p.add_argument("--max-sessions", type=positive_int, default=64)
    p.add_argument(
        "--session-ttl",
        type=positive_float,
        default=600.0,
        help="idle seconds before a session closes",
    )
    p.add_argument(
        "--step-timeout",
        type=non_negative_float,
        default=1800.0,
        help="seconds a step may run before the episode ends truncated (0: no limit)",
    )
    p.add_argument("--max-message-bytes", type=positive_int, default=4 * 1024 * 1024)
    add_env_args(p, help="env kwarg for every served env")
    p.add_argument(
        "--client-env-arg",
        action="append",
        default=[],
        metavar="KEY",
        help="an env kwarg that clients may set in their reset",
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve_model(args: argparse.Namespace) -> None:
    from mentorgym.model_server import serve_model

    gen = {k: v for k, v in gen_args(args).items() if v is not None and k != "card"}
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

    kwargs = env_args(args.env_arg)
    settings = ServeSettings(
        token=args.token,
        max_sessions=args.max_sessions,
        session_ttl_s=args.session_ttl,
        step_timeout_s=args.step_timeout or None,
        max_message_bytes=args.max_message_bytes,
        env_kwargs={env_id: kwargs for env_id in args.env_ids} if kwargs else {},
        client_env_args=frozenset(args.client_env_arg),
    )
    serve(args.env_ids, host=args.host, port=args.port, settings=settings)
