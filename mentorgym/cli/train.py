"""`mentorgym train`: train from a YAML config."""

from __future__ import annotations

import argparse

from mentorgym.cli.args import input_dir, input_file, key_value, output_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train from a YAML config")
    p.add_argument("config", type=input_file)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", type=key_value)
    p.add_argument("--out", default=None, type=output_dir, help="run directory")
    p.add_argument(
        "--resume", default=None, metavar="RUN_DIR", type=input_dir, help="continue a killed run"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="validate and build everything but the weights"
    )
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> None:
    from mentorgym.training.entry import train_from_config

    run_dir = train_from_config(
        args.config, args.set, out=args.out, resume=args.resume, dry_run=args.dry_run
    )
    print(f"run dir: {run_dir}")
