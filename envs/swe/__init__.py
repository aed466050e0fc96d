"""The SWE environment (`mentorgym/SWE-v0`): SWE-bench tasks in Docker, graded with swebench."""

from mentorgym.envs.swe.env import SWEEnv
from mentorgym.envs.swe.grading import GradeResult, grade_log
from mentorgym.envs.swe.tasks import load_tasks

__all__ = ["GradeResult", "SWEEnv", "grade_log", "load_tasks"]
