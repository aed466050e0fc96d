"""Export SWE trajectories as SWE-bench predictions.

The output is what `python -m swebench.harness.run_evaluation --predictions_path FILE`
reads: one `{"instance_id", "model_name_or_path", "model_patch"}` object per instance,
as JSONL (or a JSON list when `out_path` ends in `.json`).

Trajectory files (schema 1, see `mentorgym.agents.trajectory`) are read as plain JSON
here, because envs/ sits below agents/ and must not import it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mentorgym.errors import ConfigError


def read_trajectory_dicts(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete trajectory object in a JSONL file; a torn last line is skipped."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue  # a crash mid-write leaves at most one torn line
            if isinstance(d, dict):
                out.append(d)
    return out


def model_patch_of(traj: dict[str, Any]) -> str:
    """The model patch an episode ended with: the latest turn whose info records one ("" if none)."""
    for turn in reversed(traj.get("turns") or []):
        patch = (turn.get("info") or {}).get("model_patch")
        if isinstance(patch, str):
            return patch
    return ""


def predictions(trajs: list[dict[str, Any]], model_name: str) -> list[dict[str, Any]]:
    """One prediction per instance; when an instance has several episodes, the last one wins."""
    by_id: dict[str, dict[str, Any]] = {}
    for traj in trajs:
        task_id = traj.get("task_id")
        if not task_id:
            continue
        by_id[task_id] = {
            "instance_id": task_id,
            "model_name_or_path": model_name,
            "model_patch": model_patch_of(traj),
        }
    return list(by_id.values())


def export_predictions(
    traj_path: str | os.PathLike[str], out_path: str | os.PathLike[str], model_name: str
) -> int:
    """Write SWE-bench predictions from a trajectories JSONL; returns how many were written."""
    out = Path(out_path)
    if out.suffix not in (".jsonl", ".json"):
        raise ConfigError(
            f"predictions file {out} must end in .jsonl or .json (what swebench's run_evaluation reads)"
        )
    if not Path(traj_path).is_file():
        raise ConfigError(f"trajectory file {traj_path} does not exist")
    trajs = read_trajectory_dicts(traj_path)
    preds = predictions(trajs, model_name)
    if not preds:
        raise ConfigError(
            f"no trajectory in {traj_path} has a task_id ({len(trajs)} read); export SWE-v0 rollouts"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        if out.suffix == ".json":
            json.dump(preds, f, indent=1)
        else:
            for p in preds:
                f.write(json.dumps(p) + "\n")
    return len(preds)
