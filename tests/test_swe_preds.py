"""Exporting SWE trajectories as SWE-bench predictions, read back with swebench's own reader."""

from __future__ import annotations

import pytest
from swebench.harness.utils import get_predictions_from_file

from mentorgym.agents.trajectory import Trajectory, TrajectoryWriter, Turn
from mentorgym.envs.swe.preds import export_predictions
from mentorgym.errors import ConfigError

PATCH = "diff --git a/lib.py b/lib.py\n--- a/lib.py\n+++ b/lib.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"


def _traj(task_id: str | None, patches: list[str | None]) -> Trajectory:
    turns = [
        Turn(
            observation=[],
            actor="student",
            action="...",
            info={} if p is None else {"model_patch": p},
        )
        for p in patches
    ]
    return Trajectory(env_id="mentorgym/SWE-v0", task_id=task_id, turns=turns)


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_export_reads_back_with_swebench(tmp_path, suffix):
    trajs = tmp_path / "trajs.jsonl"
    with TrajectoryWriter(trajs) as w:
        w.write(_traj("a__b-1", ["", PATCH]))  # the last turn's patch is the prediction
        w.write(_traj("a__b-2", [PATCH, None]))  # dead last turn: the latest recorded patch
        w.write(_traj("a__b-3", [None]))  # nothing recorded: an empty prediction
        w.write(_traj(None, [PATCH]))  # not a SWE episode: skipped
    with open(trajs, "a") as f:
        f.write('{"schema": 1, "env_id": "torn')  # a crash mid-write
    out = tmp_path / f"preds{suffix}"
    assert export_predictions(trajs, out, "my-model") == 3
    preds = get_predictions_from_file(str(out), "SWE-bench/SWE-bench", "test")
    by_id = {p["instance_id"]: p for p in preds}
    assert set(by_id) == {"a__b-1", "a__b-2", "a__b-3"}
    assert by_id["a__b-1"]["model_patch"] == PATCH and by_id["a__b-2"]["model_patch"] == PATCH
    assert by_id["a__b-3"]["model_patch"] == ""
    assert all(p["model_name_or_path"] == "my-model" for p in preds)


def test_export_errors(tmp_path):
    trajs = tmp_path / "trajs.jsonl"
    with TrajectoryWriter(trajs) as w:
        w.write(_traj(None, [PATCH]))
    with pytest.raises(ConfigError, match=".jsonl or .json"):
        export_predictions(trajs, tmp_path / "preds.txt", "m")
    with pytest.raises(ConfigError, match="task_id"):
        export_predictions(trajs, tmp_path / "preds.jsonl", "m")
    with pytest.raises(ConfigError, match="does not exist"):
        export_predictions(tmp_path / "nope.jsonl", tmp_path / "preds.jsonl", "m")
