"""`mentorgym sandbox ...`: the Docker sandboxes' containers and base image."""

from __future__ import annotations

import argparse
import re

# Docker's reference grammar, simplified: [registry[:port]/]name[/name...][:tag]
_IMAGE = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[\w][\w.-]{0,127})?$"
)


def image_tag(text: str) -> str:
    if not _IMAGE.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Docker image name (lower case NAME[:TAG], e.g. mentorgym/base:latest)"
        )
    return text


def register(sub: argparse._SubParsersAction) -> None:
    sandbox = sub.add_parser("sandbox", help="Docker sandboxes").add_subparsers(
        dest="sandbox_command", required=True
    )
    p = sandbox.add_parser("reap", help="remove containers whose owner process is gone")
    p.add_argument("--all", action="store_true", help="remove every mentorgym container")
    p.set_defaults(func=cmd_sandbox_reap)
    p = sandbox.add_parser("build-base", help="build the base image offline (cached)")
    p.add_argument("--tag", default="mentorgym/base:latest", type=image_tag)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_sandbox_build_base)


def cmd_sandbox_reap(args: argparse.Namespace) -> None:
    from mentorgym.sandboxes.docker import reap

    print(f"removed {reap(all_runs=args.all)} container(s)")


def cmd_sandbox_build_base(args: argparse.Namespace) -> None:
    from mentorgym.sandboxes.image import build_base

    print(build_base(tag=args.tag, force=args.force))
