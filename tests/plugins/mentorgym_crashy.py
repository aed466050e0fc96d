"""A test env whose process dies mid-episode (for the Ray worker-loss tests).

`make("mentorgym_crashy:Crashy-v0", marker_dir=D, crash_seeds=[13])`: one turn, answered
`<answer>seed</answer>`; at a crash seed the step kills its own process with os._exit,
once per seed (a marker file in `marker_dir` remembers it) unless `always` is set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium

from mentorgym.envs.base import TextEnv, user


class CrashyEnv(TextEnv):
    """Say the seed back; at a crash seed, the process dies mid-step."""

    def __init__(
        self, marker_dir: str, crash_seeds: list[int], always: bool = False, render_mode=None
    ):
        super().__init__(render_mode)
        self.marker_dir, self.crash_seeds, self.always = Path(marker_dir), crash_seeds, always
        self.seed_: int | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.seed_ = seed
        return [user("Say the seed.")], {"task_id": str(seed)}

    def step(self, action: str):
        if self.seed_ in self.crash_seeds:
            marker = self.marker_dir / f"crashed-{self.seed_}"
            if self.always or not marker.exists():
                marker.touch()
                os._exit(1)
        ok = action == f"<answer>{self.seed_}</answer>"
        return [], float(ok), True, False, {"success": ok}

    def expert_action(self) -> str:
        return f"<answer>{self.seed_}</answer>"


gymnasium.register(id="Crashy-v0", entry_point=CrashyEnv, max_episode_steps=2)
