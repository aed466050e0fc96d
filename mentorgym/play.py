"""People in the loop: play an env by hand, watch an agent, browse saved trajectories."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mentorgym.agents.base import EnvPolicy, Policy
from mentorgym.agents.trajectory import Trajectory
from mentorgym.envs.base import Message
from mentorgym.envs.registry import make
from mentorgym.errors import ConfigError

_KEYS = {
    "\x1b[A": "Up",
    "\x1b[B": "Down",
    "\x1b[C": "Right",
    "\x1b[D": "Left",
    "w": "Up",
    "s": "Down",
    "d": "Right",
    "a": "Left",
}
_WORDS = {
    "up": "Up",
    "down": "Down",
    "left": "Left",
    "right": "Right",
    "u": "Up",
    "l": "Left",
    "r": "Right",
}
KEY_HELP = "arrow keys or W/A/S/D move · n new room · q quits"
TYPE_HELP = "type up/down/left/right, q to quit"


def _show(console: Console, messages: list[Message]) -> None:
    for m in messages:
        style = {"system": "dim", "user": "cyan", "tool": "yellow", "assistant": "green"}[m["role"]]
        console.print(
            Panel(m["content"], title=m["role"], border_style=style, expand=False), markup=False
        )


def board(grid: str, title: str, help_line: str | None = None) -> Group:
    """The grid in a panel, with the key help on its own line below it: as a panel subtitle
    it was cut to the grid's width ("n sta─"), while a line of its own fits 80 columns."""
    parts: list[Panel | Text] = [Panel(grid, title=title, expand=False)]
    if help_line:
        parts.append(Text(help_line, style="dim"))
    return Group(*parts)


def _read_key() -> str:
    """One key press from a terminal in raw mode (arrow keys arrive as three bytes)."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        ch = sys.stdin.read(1)
        if ch == "\x1b":
            ch += sys.stdin.read(2)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)
    return ch


def play(env_id: str, seed: int | None = None, env_kwargs: dict[str, Any] | None = None) -> None:
    """Play by hand. Grid envs (Sokoban) take key presses on a terminal; others take typed turns."""
    console = Console()
    env = make(env_id, **(env_kwargs or {}))
    grid = hasattr(env.unwrapped, "grid_text")
    keys = grid and sys.stdin.isatty()
    messages, info = env.reset(seed=seed)
    total, turn = 0.0, 0
    if not grid:
        _show(console, messages)
    try:
        while True:
            if grid:
                console.print(
                    board(
                        env.unwrapped.grid_text(),
                        f"{env_id}  turn {turn}  reward {total:+.1f}",
                        KEY_HELP if keys else TYPE_HELP,
                    )
                )
            if keys:
                key = _read_key()
                if key in ("q", "\x03"):
                    return
                if key == "n":
                    env.reset()
                    total, turn = 0.0, 0
                    continue
                if key not in _KEYS:
                    console.print(f"[red]unknown key {key!r}[/]: {KEY_HELP}")
                    continue
                text = f"<answer>{_KEYS[key]}</answer>"
            else:
                line = console.input("[bold green]you>[/] ").strip()
                if line.lower() in ("q", "quit", "exit"):
                    return
                text = (
                    f"<answer>{_WORDS[line.lower()]}</answer>"
                    if grid and line.lower() in _WORDS
                    else line
                )
            messages, reward, terminated, truncated, info = env.step(text)
            total += reward
            turn += 1
            if not grid or info.get("format_error"):
                _show(console, messages)
            if terminated or truncated:
                verdict = (
                    "[bold green]solved[/]" if info.get("success") else "[bold red]not solved[/]"
                )
                if grid:
                    console.print(
                        Panel(
                            env.unwrapped.grid_text(),
                            title=f"final  reward {total:+.1f}",
                            expand=False,
                        )
                    )
                console.print(f"{verdict} after {turn} turns, return {total:+.1f}")
                return
    finally:
        env.close()


def watch(
    env_id: str,
    policy: Policy | EnvPolicy,
    seed: int | None = 0,
    env_kwargs: dict[str, Any] | None = None,
    delay_s: float = 0.5,
) -> None:
    """Print one episode of `policy` as it happens."""
    console = Console()
    env = make(env_id, **(env_kwargs or {}))
    messages, _ = env.reset(seed=seed)
    history = list(messages)
    _show(console, messages)
    total = 0.0
    try:
        while True:
            if isinstance(policy, Policy):
                action = policy.act(history)
            else:
                action = policy.act_env(env)
            if action is None:
                console.print(f"[bold red]{policy.name} has no move in this state[/]")
                return
            _show(console, [{"role": "assistant", "content": action.text}])
            messages, reward, terminated, truncated, info = env.step(action.text)
            total += reward
            history += [{"role": "assistant", "content": action.text}, *messages]
            _show(console, messages)
            console.print(f"[dim]reward {reward:+.2f}  return {total:+.2f}[/]")
            if terminated or truncated:
                console.print(
                    "[bold green]success[/]" if info.get("success") else "[bold red]failure[/]"
                )
                return
            time.sleep(delay_s)
    finally:
        env.close()


def _no_episodes(path: str, bad: list[Any]) -> str:
    """Why a file holds no episode to show: empty, or nothing in it is a trajectory."""
    from pathlib import Path

    if Path(path).stat().st_size == 0:
        return f"{path} is empty: no episode has been written to it yet"
    if bad:
        first = bad[0]
        return (
            f"{path} holds no trajectories: {len(bad)} line(s) are not one (line {first.line}: "
            f"{first.reason}); give a trajectories JSONL written by `mentorgym rollout`"
        )
    return (
        f"{path} holds no complete line (is it binary, or still being written?); give a "
        "trajectories JSONL written by `mentorgym rollout`"
    )


def view(path: str, episode: int | None = None) -> None:
    """A table of the episodes in a trajectory file, or one episode turn by turn.

    Reads through the web viewer's byte-offset index, so lines that are not UTF-8 or not
    JSON are named by file and line instead of stopping the listing."""
    from pathlib import Path

    from mentorgym.viewer import TrajectoryFile

    if not Path(path).is_file():
        raise ConfigError(
            f"{path} is not a trajectories file: --episode and --list read a JSONL "
            "(e.g. RUN/iter_00/rollouts.jsonl); `mentorgym view RUN` opens a run in the browser"
        )
    console = Console()
    index = TrajectoryFile(Path(path), 0, Path(path).stem, None, None)
    index.refresh()
    n = len(index.episodes)
    if n == 0:
        raise ConfigError(_no_episodes(path, index.bad))
    for bad in index.bad:
        console.print(Text(f"{path} line {bad.line}: {bad.reason} (left out)", style="red"))
    if episode is None:
        table = Table("#", "env", "seed", "task", "turns", "return", "success", "agent", title=path)
        for s in index.episodes:
            cells = [s.k, s.env_id, s.seed, s.task_id or "-", s.turns, f"{s.return_:+.2f}"]
            cells += ["yes" if s.success else "no", s.agent]
            table.add_row(*(Text(str(c)) for c in cells))  # Text: agent strings are not markup
        console.print(table)
        console.print(Text(f"mentorgym view {path} --episode K shows one episode", style="dim"))
        return
    if not 0 <= episode < n:
        raise ConfigError(
            f"episode {episode} is not in {path}: it holds {n} episode(s), 0..{n - 1}"
        )
    t = Trajectory.from_dict(index.read(episode))
    console.rule(
        Text(
            f"{t.env_id} seed={t.seed} task={t.task_id} return={t.return_:+.2f} success={t.success}"
        )
    )
    for k, turn in enumerate(t.turns):
        _show(console, turn.observation)
        label = f"turn {k} · {turn.actor} · reward {turn.reward:+.2f}"
        console.print(
            Panel(turn.action, title=label, border_style="green", expand=False), markup=False
        )
        if turn.teacher_action is not None and turn.teacher_action != turn.action:
            console.print(
                Panel(
                    turn.teacher_action,
                    title="teacher's label",
                    border_style="magenta",
                    expand=False,
                ),
                markup=False,
            )
    _show(console, t.final_observation)
