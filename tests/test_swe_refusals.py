"""Refused patches counted by reason (`reward_refusals/...` in eval summaries and metrics)."""

from __future__ import annotations

from mentorgym.agents.rollout import summarize
from mentorgym.agents.trajectory import Trajectory, Turn
from mentorgym.envs.swe.refusals import reasons, refusal_counts

STATIC = "static check: pkg/a.py:3: reads the call stack's frames (sys._getframe, inspect.stack, f_back, ...) (x)"
RUN_TIME = (
    "run time: pkg/a.py:4: changes the import system (sys.meta_path, path_hooks, sys.modules) (y)"
)


def test_reasons_of_one_episode() -> None:
    info = {
        "excluded": {"conftest.py": "conftest.py (pytest runs it)", "tests/t.py": "a test file"},
        "tampering": [STATIC, RUN_TIME, "the log reports passes the test record does not show: t"],
    }
    assert reasons(info) == {
        "excluded/conftest", "excluded/tests", "static/frames", "run_time/import_hooks",
        "record/log_contradicted",
    }  # fmt: skip
    assert reasons({"success": True}) == set()


def test_counts_are_episodes_per_reason() -> None:
    infos = [{"tampering": [STATIC]}, {"tampering": [STATIC, STATIC]}, {}]
    assert refusal_counts(infos) == {"reward_refusals/static/frames": 2}


def test_eval_summary_carries_the_counts() -> None:
    traj = Trajectory(env_id="mentorgym/SWE-v0")
    traj.turns.append(Turn(observation=[], actor="policy", action="", info={"tampering": [STATIC]}))
    assert summarize([traj])["reward_refusals/static/frames"] == 1
