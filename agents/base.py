"""The Policy contract: messages in, an assistant turn out.

A Policy sees only the conversation. `act` returns an `Action` with the text and,
for token-level backends, the exact sampled token ids and their logprobs (trainers
train on those ids, never on a re-tokenization). A teacher also implements `score`:
the per-token logprobs of a given completion under a given context, which is what
on-policy distillation needs.

Two agents need more than the conversation: `expert` asks the env's oracle and
`random` asks the env for a random legal-looking turn. They implement `EnvPolicy`,
and the rollout loop hands them the env.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mentorgym.envs.base import Message


@dataclass
class Action:
    text: str
    token_ids: list[int] | None = None
    """Exactly the ids the policy sampled, when it samples tokens."""
    logprobs: list[float] | None = None
    """Sampling logprob of each id in `token_ids`."""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scores:
    """A teacher's view of a completion it did not write."""

    logprobs: list[float]
    """log p(token_t | context, tokens_<t) for each completion token."""
    top_logprobs: list[dict[int, float]] | None = None
    """For each position, the teacher's k most likely token ids and their logprobs."""


@runtime_checkable
class Policy(Protocol):
    name: str

    def act(self, messages: list[Message]) -> Action: ...

    def act_batch(self, histories: list[list[Message]]) -> list[Action]: ...


@runtime_checkable
class Teacher(Policy, Protocol):
    def score(
        self, messages: list[Message], completion_token_ids: list[int], top_k: int = 0
    ) -> Scores: ...


@runtime_checkable
class EnvPolicy(Protocol):
    """An agent that reads the env itself (the oracle, the random baseline)."""

    name: str

    def act_env(self, env: Any) -> Action | None:
        """None when it has no move for this state (the rollout engine decides what follows)."""
        ...


class BatchedPolicy:
    """Mixin: define either `act` or `act_batch` and get the other."""

    name: str = "policy"

    def act(self, messages: list[Message]) -> Action:
        return self.act_batch([messages])[0]

    def act_batch(self, histories: list[list[Message]]) -> list[Action]:
        return [self.act(h) for h in histories]
