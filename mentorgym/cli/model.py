"""`mentorgym model ...`: the offline tiny model."""

from __future__ import annotations

import argparse

from mentorgym.cli.args import env_id, input_dir, non_negative_int, output_dir


def register(sub: argparse._SubParsersAction) -> None:
    _register_named_models(sub)
    model = sub.add_parser("model", help="models").add_subparsers(
        dest="model_command", required=True
    )
    p = model.add_parser("tiny", help="build the offline tiny model and tokenizer")
    p.add_argument("--out", required=True, type=output_dir)
    p.add_argument("--size", choices=["tiny", "base", "small"], default="tiny")
    p.add_argument(
        "--envs",
        nargs="*",
        default=None,
        type=env_id,
        help="env ids whose text trains the tokenizer",
    )
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument(
        "--tokenizer-from",
        default=None,
        metavar="DIR",
        type=input_dir,
        help="reuse this checkpoint's tokenizer (a teacher sharing a student's token ids)",
    )
    p.set_defaults(func=cmd_model_tiny)


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


def _register_named_models(sub: argparse._SubParsersAction) -> None:
    """`mentorgym models list` and `mentorgym models get NAME` (agents/models.py's table)."""
    models = sub.add_parser("models", help="named models (a real pretrained one offline)")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    p = models_sub.add_parser("list", help="named models, where they come from, whether cached")
    p.set_defaults(func=_models_list)
    from mentorgym.agents.models import table

    p = models_sub.add_parser("get", help="fetch/convert a named model once; prints its path")
    p.add_argument("name", choices=sorted(table()), help="a name from `mentorgym models list`")
    p.set_defaults(func=_models_get)


def _models_list(args: argparse.Namespace) -> None:
    from mentorgym.agents.models import status, table

    for entry in table().values():
        print(f"{entry.name}  [{entry.source}: {entry.ref}]  {status(entry)}")
        if entry.description:
            print(f"    {entry.description}")


def _models_get(args: argparse.Namespace) -> None:
    from mentorgym.agents.models import get

    print(get(args.name))
