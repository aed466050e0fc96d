"""Per-request futures over any policy, for the asynchronous rollout engine.

An episode asks for one turn and waits only for its own answer. `channel(policy)` gives
the way to ask:

- a policy with its own `submit(history, episode) -> Future` (`vllm:` feeds its engine
  loop, `openai:` its request pool) is used as it is;
- any other message policy (`hf:`, replay, a user's class) goes behind a `BatchingQueue`:
  requests that arrive while a batch is being sampled, or each within `window_s` of the
  last (at most `max_wait_s` after the first), are answered by one `act_batch` call, so
  `hf:` still samples many episodes per forward. The window follows the burst, not the
  clock: the episodes' threads submit one after another (each first steps its env and
  encodes its prompt), so a window fixed from the first arrival split a round of 16
  one-turn episodes into two `generate` calls of 6 and 10 (`bench/vs_trl.py`).

Either way at most `max_in_flight` requests of one policy are outstanding; the rest wait
for a slot. Each request may carry a `seed` (`mentorgym.agents.seeding.turn_seed`); policies
that set `takes_request_seeds` sample it from a generator of its own, so the batch it
landed in does not change what it samples. A future holds an `Action`, or a `RequestError` for a request the backend
refused (a prompt past the context window, an HTTP 4xx): that ends its own episode.
Any other exception is set on the futures of the batch it broke.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from mentorgym.agents.base import Action, BatchedPolicy, Policy
from mentorgym.envs.base import Message
from mentorgym.errors import RequestError


class Channel(Protocol):
    def submit(
        self, history: list[Message], episode: str | None = None, seed: int | None = None
    ) -> Future[Any]: ...

    def close(self) -> None: ...


class SubmittingPolicy(BatchedPolicy):
    """A policy that answers each request with a future (`submit`), and remembers each
    episode's sampled turns in `self.sampled` (`vllm:` and `openai:`). The batch calls are
    all its futures at once."""

    sampled: Any
    takes_request_seeds = True

    def submit(
        self, history: list[Message], episode: str | None = None, seed: int | None = None
    ) -> Future[Any]:
        raise NotImplementedError

    def try_act_batch(
        self,
        histories: list[list[Message]],
        episodes: Sequence[str] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[Action | RequestError]:
        keys = list(episodes) if episodes is not None else [None] * len(histories)
        turn_seeds = list(seeds) if seeds is not None else [None] * len(histories)
        futures = [
            self.submit(h, k, s) for h, k, s in zip(histories, keys, turn_seeds, strict=True)
        ]
        return [f.result() for f in futures]

    def act_batch(
        self, histories: list[list[Message]], episodes: Sequence[str] | None = None
    ) -> list[Action]:
        """Every history in flight at once; raises the first `RequestError`."""
        actions = self.try_act_batch(histories, episodes)
        for a in actions:
            if isinstance(a, RequestError):
                raise a
        return actions  # type: ignore[return-value]

    def end_episode(self, episode: str) -> None:
        self.sampled.forget(episode)


def act_many(
    policy: Policy,
    histories: list[list[Message]],
    episodes: Sequence[str] | None,
    seeds: Sequence[int] | None = None,
) -> list[Action | RequestError]:
    """One batched call: `try_act_batch` where the policy has it (failures as values), else
    `act_batch`; episode keys and request seeds go to the policies that take them."""
    if getattr(policy, "takes_episode_keys", False):
        try_batch = getattr(policy, "try_act_batch", None)
        if try_batch is not None and seeds is not None and _takes_seeds(policy):
            return list(try_batch(histories, episodes, seeds))
        if try_batch is not None:
            return list(try_batch(histories, episodes))
        return list(policy.act_batch(histories, episodes))  # type: ignore[call-arg]
    try:
        return list(policy.act_batch(histories))
    except RequestError as e:  # a policy without per-history errors fails its whole batch
        return [e] * len(histories)


def _takes_seeds(policy: Any) -> bool:
    return bool(getattr(policy, "takes_request_seeds", False))


@dataclass
class _Ask:
    history: list[Message]
    episode: str | None
    future: Future[Any]
    seed: int | None = None


class BatchingQueue:
    """`act_batch` behind per-request futures, on one thread (see the module docstring)."""

    def __init__(
        self,
        policy: Policy,
        max_batch: int = 64,
        window_s: float = 0.002,
        max_wait_s: float = 0.05,
    ):
        self.policy = policy
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_wait_s = max_wait_s
        self.batch_sizes: list[int] = []
        self._asks: list[_Ask] = []
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="policy-batcher")
        self._thread.start()

    def submit(
        self, history: list[Message], episode: str | None = None, seed: int | None = None
    ) -> Future[Any]:
        future: Future[Any] = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("this BatchingQueue is closed")
            self._asks.append(_Ask(history, episode, future, seed))
            self._cv.notify()
        return future

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._asks and not self._closed:
                    self._cv.wait()
                if not self._asks:
                    return  # closed and drained
                deadline = time.monotonic() + self.max_wait_s
                while len(self._asks) < self.max_batch and not self._closed:
                    seen = len(self._asks)
                    left = min(self.window_s, deadline - time.monotonic())
                    if left <= 0:
                        break
                    self._cv.wait(left)
                    if len(self._asks) == seen:
                        break  # nothing arrived for window_s: the burst is over
                batch, self._asks = self._asks[: self.max_batch], self._asks[self.max_batch :]
            self.batch_sizes.append(len(batch))
            try:
                keys = [a.episode for a in batch]
                episodes = keys if all(k is not None for k in keys) else None
                seeds = [a.seed for a in batch]
                turn_seeds = seeds if all(s is not None for s in seeds) else None
                results = act_many(self.policy, [a.history for a in batch], episodes, turn_seeds)  # type: ignore[arg-type]
            except BaseException as e:  # noqa: BLE001 - handed to the episodes that asked
                for a in batch:
                    a.future.set_exception(e)
                continue
            for a, r in zip(batch, results, strict=True):
                a.future.set_result(r)


class Limited:
    """A policy's own `submit`, with at most `max_in_flight` requests outstanding."""

    def __init__(self, policy: Any, max_in_flight: int):
        self.policy = policy
        self._slots = threading.BoundedSemaphore(max_in_flight)

    def submit(
        self, history: list[Message], episode: str | None = None, seed: int | None = None
    ) -> Future[Any]:
        self._slots.acquire()
        try:
            if seed is not None and _takes_seeds(self.policy):
                future = self.policy.submit(history, episode, seed)
            else:
                future = self.policy.submit(history, episode)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    def close(self) -> None:
        pass  # the policy outlives the run


def channel(policy: Policy, max_in_flight: int) -> Channel:
    """How the asynchronous engine asks `policy` for turns (see the module docstring)."""
    if callable(getattr(policy, "submit", None)):
        return Limited(policy, max_in_flight)
    return BatchingQueue(policy, max_batch=max_in_flight)
