"""The `mentorgym` command line: list, play, watch, roll out, evaluate, view, train, serve.

Each command group is a module with `register(subparsers)`; `COMMAND_GROUPS` lists them, and
a new group is one module and one line there. Each subcommand is a small function that
parses its arguments and calls the library; nothing here is needed to use mentorgym from
Python.

Errors: a user's mistake (a bad argument, a file that is not what it should be, a missing
engine) is one line on stderr, `mentorgym: error: ...`, and exit code 2. Anything else is a
bug in mentorgym: its traceback, a line asking for a report, and exit code 1.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from types import ModuleType

from gymnasium import error as gym_error

from mentorgym.cli import episodes, model, sandbox, serve, swe, train
from mentorgym.cli.args import Parser
from mentorgym.errors import MentorgymError

COMMAND_GROUPS: tuple[ModuleType, ...] = (episodes, train, serve, model, sandbox, swe)
"""Each module's `register(subparsers)` adds its commands, in this order."""


def build_parser() -> Parser:
    parser = Parser(prog="mentorgym", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def user_error(e: BaseException) -> str | None:
    """The one line that tells a user what to fix, or None when `e` is a bug of ours."""
    if isinstance(e, (MentorgymError, gym_error.Error)):
        return " ".join(str(e).split())
    if isinstance(e, OSError) and e.filename is not None:
        # A path the user gave that the system refused (permissions, a full disk).
        return f"{e.filename}: {e.strerror or e}"
    return None


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so Python's flush at exit does not fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a bad argument (one line, said by the parser)
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("mentorgym: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mentorgym envs | head`: the reader left, which is no error
        _silence_stdout()
        return 141
    except Exception as e:
        line = user_error(e)
        if line is None:
            traceback.print_exc()
            print(
                "mentorgym: this is a bug in mentorgym, not a mistake of yours: please report "
                "it with the command you ran and the traceback above",
                file=sys.stderr,
            )
            return 1
        print(f"mentorgym: error: {line}", file=sys.stderr)
        return 2
    return 0
