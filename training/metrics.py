"""Metrics: one JSON object per line in `RUN/metrics.jsonl` (and to the trackers named in
`report_to`), and `RUN/curves.png` (matplotlib, Agg) drawn from them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mentorgym.training.trackers import Trackers


class Metrics:
    """Appends metric records to `metrics.jsonl` (main rank only) and keeps them for plots."""

    def __init__(self, path: Path, enabled: bool = True, trackers: Trackers | None = None):
        self.path = path
        self.enabled = enabled
        self.trackers = trackers if enabled and trackers is not None else Trackers([])
        self.records: list[dict[str, Any]] = []
        if path.exists():
            self.records = [
                json.loads(line) for line in path.read_text().splitlines() if line.strip()
            ]

    def truncate(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        """Forget records a resumed run will redo (those after the checkpoint it resumes from)."""
        self.records = [r for r in self.records if keep(r)]
        if self.enabled:
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def log(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            self.trackers.log(record)

    def plot(self, path: Path) -> None:
        """Loss and learning rate per step, and evaluation success per iteration if any."""
        if not self.enabled:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = [r for r in self.records if r.get("kind") == "train"]
        evals = [r for r in self.records if r.get("kind") == "eval" and "success_rate" in r]
        n = 3 if evals else 2
        fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.5))
        if train:
            losses = [r["loss"] for r in train]
            axes[0].plot([r["step"] for r in train], losses)
            # Cross-entropy is positive (log scale); policy-gradient losses can be zero or negative.
            scale = "log" if min(losses) > 0 else "symlog"
            axes[0].set(xlabel="step", ylabel="loss", yscale=scale, title="training loss")
            axes[1].plot([r["step"] for r in train], [r["lr"] for r in train])
            axes[1].set(xlabel="step", ylabel="lr", title="learning rate")
        if evals:
            axes[2].plot(
                [r["iteration"] for r in evals], [r["success_rate"] for r in evals], marker="o"
            )
            axes[2].set(
                xlabel="iteration",
                ylabel="success",
                ylim=(0, 1),
                title="held-out success (student)",
            )
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
