"""Experiment trackers, named the way TRL users name them: `report_to: [tensorboard, wandb, trackio]`.

A training config's `report_to` list (empty by default) opens one tracker per name; each
gets the run's config once and then every record the trainer writes to `metrics.jsonl`,
as scalars under the record's kind (`train/loss`, `eval/success_rate`) at the record's
global `step`. `metrics.jsonl` and `curves.png` are written as before: trackers are extra
copies, never the record of the run.

Each tracker is an optional extra, imported only when named:
- `tensorboard` (`pip install 'mentorgym[tensorboard]'`): event files in `RUN/tensorboard/`
  (`tensorboard --logdir RUN`), written by torch's `SummaryWriter`; the config is a text
  summary.
- `wandb` (`pip install 'mentorgym[wandb]'`): one W&B run in `RUN/wandb/`, project
  `$WANDB_PROJECT` or "mentorgym". `WANDB_MODE=offline` works without a network (then
  `wandb sync RUN/wandb/offline-run-*` uploads it later).
- `trackio` (`pip install 'mentorgym[trackio]'`): Hugging Face's local-first tracker,
  project `$TRACKIO_PROJECT` or "mentorgym", stored under `$TRACKIO_DIR`
  (`trackio show` opens its dashboard).
"""

from __future__ import annotations

import atexit
import difflib
import json
import math
import os
from pathlib import Path
from typing import Any, Protocol

from mentorgym.errors import ConfigError

KNOWN = ("tensorboard", "wandb", "trackio")
_EXTRA_HINT = "pip install 'mentorgym[{name}]' (or pip install {package})"


class Tracker(Protocol):
    def log(self, scalars: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def scalars_of(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of one metrics record, named `kind/key`; `step` and `kind` are not scalars,
    booleans and non-finite numbers are left out (trackers reject or misplot them)."""
    kind = str(record.get("kind", "metrics"))
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in ("kind", "step") or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[f"{kind}/{key}"] = float(value)
    return out


def check_report_to(report_to: list[str]) -> list[str]:
    """`report_to` as given, or a ConfigError naming the unknown tracker and the known ones."""
    if isinstance(report_to, str):
        raise ConfigError(
            f"report_to: {report_to!r} is a string; write a list, e.g. report_to: [{report_to}]"
        )
    for name in report_to:
        if name not in KNOWN:
            close = difflib.get_close_matches(str(name), KNOWN, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"report_to: unknown tracker {name!r}{hint}; known: {', '.join(KNOWN)}"
            )
    return list(report_to)


def _import(name: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise ConfigError(
            f"report_to names {name}, which is not installed: {_EXTRA_HINT.format(name=name, package=package.split('.')[0])}"
        ) from e


class _TensorBoard:
    def __init__(self, run_dir: Path, config: dict[str, Any]):
        _import("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text(
            "config", "```\n" + json.dumps(config, indent=1, default=str) + "\n```"
        )

    def log(self, scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, run_dir: Path, config: dict[str, Any], name: str):
        wandb = _import("wandb", "wandb")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "mentorgym"),
            name=name,
            dir=str(run_dir),
            config=config,
            reinit="create_new",
        )

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class _Trackio:
    def __init__(self, config: dict[str, Any], name: str):
        self.trackio = _import("trackio", "trackio")
        self.run = self.trackio.init(
            project=os.environ.get("TRACKIO_PROJECT", "mentorgym"), name=name, config=config
        )

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """The trackers a run reports to; `log(record)` takes what `metrics.jsonl` gets."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers
        self._last_step = 0

    def log(self, record: dict[str, Any]) -> None:
        if not self.trackers:
            return
        step = record.get("step")
        step = int(step) if isinstance(step, (int, float)) else self._last_step
        self._last_step = step
        scalars = scalars_of(record)
        if scalars:
            for t in self.trackers:
                t.log(scalars, step)

    def close(self) -> None:
        for t in self.trackers:
            t.close()
        self.trackers = []

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_trackers(
    report_to: list[str], run_dir: str | os.PathLike[str], config: dict[str, Any], name: str
) -> Trackers:
    """One tracker per name in `report_to`, each given the run's `config`; an empty list
    opens nothing and imports nothing."""
    run_dir = Path(run_dir)
    trackers: list[Tracker] = []
    try:
        for tracker in check_report_to(report_to):
            if tracker == "tensorboard":
                trackers.append(_TensorBoard(run_dir, config))
            elif tracker == "wandb":
                trackers.append(_Wandb(run_dir, config, name))
            else:
                trackers.append(_Trackio(config, name))
    except BaseException:
        for t in trackers:  # the ones already open end cleanly before the error propagates
            t.close()
        raise
    opened = Trackers(trackers)
    if trackers:
        # A run that ends (or dies) without closing still finishes its W&B and trackio runs.
        atexit.register(opened.close)
    return opened
