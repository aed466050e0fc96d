"""DAgger's turn-level interpolation: each turn is written wholly by the teacher with
probability beta, else by the student."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from mentorgym.agents.base import Action, EnvPolicy, Policy
from mentorgym.envs.base import Message


@dataclass
class MixturePolicy:
    student: Policy | EnvPolicy
    teacher: Policy | EnvPolicy
    beta: float
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        self._rng = random.Random(self.seed)
        self.name = f"mixture(beta={self.beta:g})"

    def choose(self, coin: random.Random | None = None) -> str:
        """Flip this turn's coin: "teacher" with probability beta, else "student".

        `coin` is an episode's own generator (`coin(key)`); without it the mixture's."""
        rng = coin if coin is not None else self._rng
        return "teacher" if rng.random() < self.beta else "student"

    def coin(self, episode_key: str) -> random.Random:
        """An episode's own coin, seeded by the mixture's seed and the episode: its turns'
        actors do not depend on how other episodes' turns interleave with its own."""
        if self.seed is None:
            return random.Random()
        return random.Random(f"{self.seed}/{episode_key}")

    def act(self, messages: list[Message]) -> Action:
        """Standalone use with two message policies; the rollout engine calls `choose` itself."""
        actor = self.choose()
        policy = self.teacher if actor == "teacher" else self.student
        if not isinstance(policy, Policy):
            raise TypeError(
                f"{policy.name} needs the env; run it through mentorgym.agents.rollout.run"
            )
        action = policy.act(messages)
        action.meta["actor"] = actor
        return action

    def act_batch(self, histories: list[list[Message]]) -> list[Action]:
        return [self.act(h) for h in histories]
