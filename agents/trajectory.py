"""Trajectories: one JSON object per episode, appended to a JSONL file as each episode ends.

Schema 1 (fields may be added; none renamed without a schema bump):

    {"schema": 1, "env_id", "seed", "task_id",
     "turns": [{"observation", "actor", "action", "token_ids", "logprobs",
                "teacher_action", "reward", "timing": {"policy_s", "env_s"}, "info"}],
     "final_observation", "return", "success", "terminated", "truncated", "meta"}

A turn's `observation` is the messages the env produced just before that action
(the reset messages for turn 0, the previous step's reply after that), so the full
context of turn k is `context(traj, k)`, and no message is stored twice.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mentorgym.envs.base import Message

SCHEMA = 1


@dataclass
class Turn:
    observation: list[Message]
    actor: str
    action: str
    reward: float = 0.0
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    teacher_action: str | None = None
    timing: dict[str, float] = field(default_factory=lambda: {"policy_s": 0.0, "env_s": 0.0})
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trajectory:
    env_id: str
    seed: int | None = None
    task_id: str | None = None
    turns: list[Turn] = field(default_factory=list)
    final_observation: list[Message] = field(default_factory=list)
    success: bool = False
    terminated: bool = False
    truncated: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def return_(self) -> float:
        return float(sum(t.reward for t in self.turns))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d = {"schema": SCHEMA, **d, "return": self.return_}
        return jsonable(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        if d.get("schema") != SCHEMA:
            raise ValueError(
                f"trajectory schema {d.get('schema')!r} is not {SCHEMA}; re-run the rollout with this version"
            )
        turns = [Turn(**t) for t in d["turns"]]
        known = {
            "env_id",
            "seed",
            "task_id",
            "final_observation",
            "success",
            "terminated",
            "truncated",
            "meta",
        }
        return cls(turns=turns, **{k: v for k, v in d.items() if k in known})


def context(traj: Trajectory, k: int) -> list[Message]:
    """The conversation the policy saw before acting at turn k."""
    messages: list[Message] = []
    for turn in traj.turns[:k]:
        messages.extend(turn.observation)
        messages.append({"role": "assistant", "content": turn.action})
    messages.extend(traj.turns[k].observation)
    return messages


def jsonable(x: Any) -> Any:
    """Make env `info` values JSON-safe: numpy scalars and arrays, sets, tuples, NaN."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "tolist"):  # numpy scalars and arrays, torch tensors
        return jsonable(x.tolist())
    return repr(x)


class TrajectoryWriter:
    """Appends one line per finished episode and flushes it to disk at once."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, traj: Trajectory) -> None:
        self._f.write(json.dumps(traj.to_dict(), ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_trajectories(path: str | os.PathLike[str]) -> Iterator[Trajectory]:
    """Every complete trajectory in a JSONL file; a torn last line (a crash mid-write) is skipped."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            yield Trajectory.from_dict(d)
