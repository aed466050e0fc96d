"""mentorgym: Gymnasium-style multi-turn text environments and trainers that teach
LLM agents on the states they visit themselves (DAgger, OPD, SOD, Skill-SD).

    import mentorgym
    env = mentorgym.make("mentorgym/Sokoban-v0")
    trajectories = mentorgym.rollout("mentorgym/Sokoban-v0", "expert", n=4)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gymnasium import register

from mentorgym.envs.registry import make, register_builtin

if TYPE_CHECKING:
    from mentorgym.agents.trajectory import Trajectory

__version__ = "0.1.0"
__all__ = ["make", "register", "rollout", "__version__"]

register_builtin()


def rollout(env_id: str, agent: str, n: int = 1, **kwargs: Any) -> list[Trajectory]:
    """Run `n` episodes of `env_id` with the agent spec `agent`; see `mentorgym.agents.rollout.run`."""
    from mentorgym.agents.rollout import run
    from mentorgym.agents.specs import load_policy

    return run(env_id, load_policy(agent), n=n, **kwargs)
