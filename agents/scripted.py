"""Agents that need no model: the env's oracle, a random baseline, a replayed script, a person."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mentorgym.agents.base import Action, BatchedPolicy
from mentorgym.envs.base import Message
from mentorgym.errors import ConfigError


class ExpertPolicy:
    """Asks the env's `expert_action()` oracle (Sokoban's solver, math's program, SWE's gold patch)."""

    name = "expert"

    def act_env(self, env: Any) -> Action | None:
        """None where the oracle has no move (a dataset problem without a solution, a dead end)."""
        text = env.unwrapped.expert_action()
        return None if text is None else Action(text)


class RandomPolicy:
    """A random legal-looking turn from the env (`random_action()`); the floor any agent must beat."""

    name = "random"

    def act_env(self, env: Any) -> Action:
        return Action(env.unwrapped.random_action())


class ReplayPolicy(BatchedPolicy):
    """Replays a JSON list of action strings, in order, in every episode (for tests and scripts).

    The k-th assistant turn of an episode gets the k-th string; past the end it
    sends an empty turn, which the env answers with a format error.
    """

    def __init__(self, path: str | Path):
        self.name = f"replay:{path}"
        try:
            actions = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8
            raise ConfigError(
                f"replay file {path}: {e}; it must hold a JSON list of action strings"
            ) from e
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise ConfigError(f"replay file {path} must hold a JSON list of strings")
        self.actions: list[str] = actions

    def act(self, messages: list[Message]) -> Action:
        k = sum(m["role"] == "assistant" for m in messages)
        return Action(self.actions[k] if k < len(self.actions) else "")


class HumanPolicy(BatchedPolicy):
    """A person at the terminal types each assistant turn (a direction word becomes an answer)."""

    name = "human"
    _DIRECTIONS = {"up", "down", "left", "right"}

    def act(self, messages: list[Message]) -> Action:
        from rich.console import Console

        console = Console()
        seen = sum(m["role"] == "assistant" for m in messages)
        # Show what arrived since the person's last turn.
        tail: list[Message] = []
        for m in reversed(messages):
            if m["role"] == "assistant":
                break
            tail.append(m)
        for m in reversed(tail):
            console.rule(f"[bold]{m['role']}")
            console.print(m["content"], markup=False)
        text = console.input(f"[bold green]turn {seen + 1}>[/] ")
        if text.strip().lower() in self._DIRECTIONS:
            text = f"<answer>{text.strip().capitalize()}</answer>"
        return Action(text)
