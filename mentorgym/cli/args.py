"""Argument types and shared argument groups of the `mentorgym` command line.

Every value a user types is checked here, at parse time, before any file is written or any
model loaded: a bad one ends the command with one line naming the argument (argparse's
`argument -n: ...`) and exit code 2. Checks that need a file's content live with the code
that reads it, and raise `ConfigError` naming the file and the line or record.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

from mentorgym.errors import ConfigError, MentorgymError


class Parser(argparse.ArgumentParser):
    """argparse, with a one-line error: what is wrong, and where to read the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# --- numbers ---------------------------------------------------------------------------------


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """A count of things (episodes, sessions, bytes): 1 or more."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def non_negative_int(text: str) -> int:
    """A seed or an index: 0 or more."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def non_negative_float(text: str) -> float:
    """Seconds, a temperature, CPUs: 0 or more."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def probability(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


def top_p(text: str) -> float:
    value = _float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be in (0, 1]")
    return value


def port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0 to 65535)")
    return value


# --- names -----------------------------------------------------------------------------------


def env_id(text: str) -> str:
    """A registered env id (`mentorgym envs` lists them; plugins' ids too, and an id without
    its version means the latest, as in `gymnasium.make`). `module:Id-v0` imports its module
    first, so it is left for `make` to check."""
    import difflib

    import gymnasium
    from gymnasium import error as gym_error

    from mentorgym.envs.registry import load_plugins

    if ":" in text:
        return text
    load_plugins()
    try:
        gymnasium.spec(text)
        return text
    except gym_error.Error:
        pass

    def name(env: str) -> str:  # "mentorgym/Sokoban-v0" -> "sokoban"
        return env.rsplit("/", 1)[-1].split("-v")[0].lower()

    by_name: dict[str, list[str]] = {}
    for known in gymnasium.registry:
        by_name.setdefault(name(known), []).append(known)
    names = difflib.get_close_matches(name(text), list(by_name), n=3, cutoff=0.6)
    close = [known for n in names for known in by_name[n]][:3]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a registered env id.{hint} `mentorgym envs` lists them"
    )


# --- paths -----------------------------------------------------------------------------------


def input_file(text: str) -> str:
    """A file the command reads: it must exist and be a file."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return text


def input_dir(text: str) -> str:
    """A directory the command reads (a checkpoint, a repository, a run)."""
    path = Path(text).expanduser()
    if path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a directory")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return text


def input_path(text: str) -> str:
    """A file or a directory the command reads."""
    if not Path(text).expanduser().exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return text


def output_file(text: str) -> str:
    """A file the command writes or appends to; its folder is made when missing."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name to write")
    _check_parents(text, path)
    return text


def output_dir(text: str) -> str:
    """A directory the command fills; made when missing."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a directory to write into")
    _check_parents(text, path)
    return text


def _check_parents(text: str, path: Path) -> None:
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, not a folder")
            return


def key_value(text: str) -> str:
    """KEY=VALUE, checked at parse time (the value is read by the command)."""
    key, sep, _ = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return text


# --- shared groups ---------------------------------------------------------------------------


def env_args(pairs: list[str]) -> dict[str, Any]:
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


def add_env_args(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument(
        "--env-arg", action="append", default=[], metavar="KEY=VALUE", type=key_value, help=help
    )


def gen_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.policy_seed,
        "card": args.card,
    }


def add_gen(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation (model agents)")
    g.add_argument("--temperature", type=non_negative_float, default=None)
    g.add_argument("--top-p", type=top_p, default=None)
    g.add_argument("--max-new-tokens", type=positive_int, default=None)
    g.add_argument(
        "--policy-seed", type=non_negative_int, default=None, help="seed of the model's sampler"
    )
    g.add_argument(
        "--card",
        default=None,
        type=input_dir,
        help="openai: a checkpoint directory whose policy card and tokenizer to use "
        "(default: the `root` the server reports, when it is a local directory)",
    )


def load_agent(flag: str, spec: str, gen: dict[str, Any]) -> Any:
    """The policy an agent spec names; its errors name the argument that gave it."""
    from mentorgym.agents.specs import load_policy

    try:
        return load_policy(spec, **gen)
    except MentorgymError as e:
        raise ConfigError(f"{flag} {spec}: {e}") from None


def count_trajectories(flag: str, path: str) -> int:
    """How many trajectories a JSONL holds; a line that is not one, or a file with none, is
    refused naming the file and the line (a torn last line is what a killed writer leaves)."""
    from mentorgym.agents.trajectory import read_trajectories

    n = sum(1 for _ in read_trajectories(path))
    if n == 0:
        raise ConfigError(
            f"{flag} {path} holds no trajectories; give a JSONL written by `mentorgym rollout`"
        )
    return n


def say(line: str) -> None:
    """A note for the user on stderr (stdout stays the command's result)."""
    print(f"mentorgym: {line}", file=sys.stderr)
