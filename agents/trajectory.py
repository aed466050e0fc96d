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
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mentorgym.envs.base import Message
from mentorgym.errors import MentorgymError

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
        drop_torn_tail(self.path)
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


def drop_torn_tail(path: Path) -> None:
    """Cut off the unfinished last line a writer killed mid-line leaves, before appending:
    the next episode would otherwise be glued to it and both be lost. Readers already skip
    that line (`BadLines.torn_tail`); a tail that is not the start of a JSON object is not
    ours to cut, so it is refused instead."""
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        start = size
        while start > 0:
            step = min(start, 1 << 16)
            f.seek(start - step)
            chunk = f.read(step)
            if start == size and chunk.endswith(b"\n"):
                return
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                start = start - step + cut + 1
                break
            start -= step
        if start == size:
            return
        f.seek(start)
        if not f.read(1) == b"{":
            raise TrajectoryFileError(
                f"{path} ends in an unfinished line that is not a trajectory; it is not a "
                "trajectories file: write to a new file"
            )
        f.truncate(start)
    log.warning(
        "%s: cut off an unfinished last line (%d bytes) left by a writer that was stopped",
        path,
        size - start,
    )


log = logging.getLogger(__name__)

MAX_EXAMPLES = 5


class TrajectoryFileError(MentorgymError, ValueError):
    """A line of a trajectory file is not a trajectory (not UTF-8, not JSON, wrong fields)."""


@dataclass
class BadLines:
    """What `read_trajectories(..., on_bad_line="skip")` left out."""

    count: int = 0
    """Lines skipped because they are not trajectories."""
    examples: list[str] = field(default_factory=list)
    """The first few reasons, each naming the file and line."""
    torn_tail: bool = False
    """The file ended in an unfinished line (a writer killed mid-line); never counted."""

    def add(self, reason: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(reason)


def read_trajectories(
    path: str | os.PathLike[str],
    *,
    on_bad_line: Literal["raise", "skip"] = "raise",
    bad: BadLines | None = None,
) -> Iterator[Trajectory]:
    """Every trajectory in a JSONL file, in order.

    Trajectory files are input like any other (an agent's text is in them): a line that is
    not UTF-8, not JSON or not a trajectory raises `TrajectoryFileError` naming the file and
    line, or with `on_bad_line="skip"` is left out and counted in `bad` (and logged once at
    the end). A last line without its newline that does not parse is what a writer killed
    mid-line leaves: it is skipped in both modes and noted as `bad.torn_tail`.
    """
    if on_bad_line not in ("raise", "skip"):
        raise ValueError(f'on_bad_line must be "raise" or "skip", got {on_bad_line!r}')
    bad = bad if bad is not None else BadLines()
    skipped_before = bad.count
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            torn = not raw.endswith(b"\n")
            if not raw.strip():
                continue
            try:
                traj = _parse_line(raw)
            except _BadLine as e:
                if torn:
                    bad.torn_tail = True
                    break
                where = f"{os.fspath(path)}:{number}: {e}"
                if on_bad_line == "raise":
                    raise TrajectoryFileError(
                        f"{where}. Fix or delete that line, or read with "
                        'on_bad_line="skip" to leave such lines out'
                    ) from None
                bad.add(where)
                continue
            yield traj
    if bad.count > skipped_before:
        log.warning(
            "%s: skipped %d line(s) that are not trajectories, e.g. %s",
            os.fspath(path),
            bad.count - skipped_before,
            bad.examples[0],
        )


class _BadLine(Exception):
    pass


def _parse_line(raw: bytes) -> Trajectory:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _BadLine(f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise _BadLine(f"not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(d, dict):
        raise _BadLine(f"a JSON {type(d).__name__}, not a trajectory object")
    try:
        return Trajectory.from_dict(d)
    except ValueError as e:
        raise _BadLine(str(e)) from None
    except (TypeError, KeyError) as e:
        raise _BadLine(f"not a trajectory ({type(e).__name__}: {e})") from None
