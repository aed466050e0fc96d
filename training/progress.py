"""What a person reads while a run trains and when it ends.

- `Progress`: tqdm's bar on a terminal, unchanged. In a log file (stderr is not a TTY) a bar
  would write a line per step, so it writes one line when the phase ends (one per DAgger
  iteration) and at most one every two minutes before that, with the same figures: steps, loss,
  seconds per step, elapsed time.
- `quiet_transformers()`: Transformers draws "Loading weights" and "Writing model shards"
  bars at every checkpoint; inside this context they are off (warnings still show).
- `run_summary(run_dir)`: the few lines a run ends with: held-out success at the first and
  last evaluation, where the final checkpoint is, and how to look at the run.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

LOG_EVERY_S = 120.0


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """A step counter for one training phase: a tqdm bar on a TTY, a line now and then in a log."""

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "train",
        enabled: bool = True,
        stream: TextIO | None = None,
        every_s: float = LOG_EVERY_S,
    ):
        self.stream = stream or sys.stderr
        self.total, self.step, self.desc = total, initial, desc
        self.enabled = enabled
        self.every_s = every_s
        self.figures: dict[str, float] = {}
        self._t0 = self._last = time.monotonic()
        self._first = initial
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False, file=self.stream)

    def update(self, n: int = 1, **figures: float) -> None:
        self.step += n
        self.figures.update(figures)
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in figures.items()})
        elif self.enabled and time.monotonic() - self._last >= self.every_s:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        self._last = now
        done = self.step - self._first
        rate = f"  {(now - self._t0) / done:.2f} s/step" if done else ""
        figs = "".join(f"  {k} {v:.4f}" for k, v in self.figures.items())
        print(
            f"{self.desc}: step {self.step}/{self.total}{figs}{rate}  {_clock(now - self._t0)}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self.step > self._first:
            self._line()
        self.enabled = False


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Turn Transformers' progress bars off inside the block, and back on after if they were."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def run_summary(run_dir: Path) -> list[str]:
    """The closing lines of a run, from `RUN/metrics.jsonl` and what the run left on disk."""
    records: list[dict[str, Any]] = []
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run
    evals = [r for r in records if r.get("kind") == "eval" and "success_rate" in r]

    def at(r: dict[str, Any]) -> str:
        return (
            f"after iteration {r['iteration']}" if "iteration" in r else f"at step {r.get('step')}"
        )

    lines = []
    if len(evals) >= 2:
        first, last = evals[0], evals[-1]
        lines.append(
            f"held-out success (student alone): {first['success_rate']:.3f} {at(first)}"
            f" -> {last['success_rate']:.3f} {at(last)}"
        )
    elif evals:
        lines.append(f"held-out success (student alone): {evals[0]['success_rate']:.3f}")
    final = run_dir / "final"
    if final.exists():
        lines.append(f"checkpoint: {final}")
    lines.append(f"look at it: mentorgym view {run_dir}")
    return lines
