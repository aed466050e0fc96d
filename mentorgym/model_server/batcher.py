"""The request batcher: generate requests that arrive together run as one `generate` call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol, TypeVar

from mentorgym.agents.seeding import derive
from mentorgym.envs.base import Message

T = TypeVar("T")


class Generation(Protocol):
    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[dict[int, float]] | None
    text: str
    finish_reason: str


class GenerativeModel(Protocol):
    """What the server needs from a policy: `HFPolicy` offers all of it."""

    tokenizer: Any

    def generate(
        self,
        prompt_ids: list[list[int]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop: list[str] | None = None,
        top_logprobs: int = 0,
        seed: int | None = None,
        seeds: list[int] | None = None,
    ) -> list[Any]: ...

    def prompt_logprobs(
        self, ids: list[int], top_k: int = 0
    ) -> tuple[list[float | None], list[dict[int, float]] | None]: ...

    def encode(self, messages: list[Message]) -> list[int]: ...


@dataclass(frozen=True)
class GenParams:
    """Sampling settings; requests with equal params share one `generate` call.

    `seed` is not part of the grouping: when every request of a batch has one, each prompt
    samples from a generator of its own (`generate`'s `seeds`), so a seeded request gives
    the same tokens in any batch; otherwise the batch is seeded by its first seed.
    """

    max_new_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0
    seed: int | None = field(default=None, compare=False, hash=False)


@dataclass
class _Pending:
    prompts: list[list[int]]
    params: GenParams
    future: asyncio.Future[list[Any]]


@dataclass
class Batcher:
    """Collects generate requests for `window_s` (or up to `max_batch` prompts) and runs one
    `policy.generate` per group of equal params. The model runs on one worker thread, so
    requests that arrive while it is busy join the next batch."""

    policy: GenerativeModel
    max_batch: int = 64
    window_s: float = 0.005
    generate_calls: int = 0
    """How many times `policy.generate` ran (tests and metrics read it)."""
    batch_sizes: list[int] = field(default_factory=list)
    _queue: asyncio.Queue[_Pending] | None = None
    _task: asyncio.Task[None] | None = None
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="mentorgym-model")
    )

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False)

    async def generate(self, prompts: list[list[int]], params: GenParams) -> list[Any]:
        if self._queue is None:
            raise RuntimeError("the batcher is not running; start the app with its lifespan")
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(prompts, params, future))
        return await future

    async def run_model(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run any other model call on the model's thread, serialized with generation."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].prompts)
            deadline = loop.time() + self.window_s
            while size < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                batch.append(item)
                size += len(item.prompts)
            groups: dict[GenParams, list[_Pending]] = {}
            for item in batch:
                groups.setdefault(item.params, []).append(item)
            for params, items in groups.items():
                seed = next((i.params.seed for i in items if i.params.seed is not None), None)
                await self._run_group(replace(params, seed=seed), items)

    async def _run_group(self, params: GenParams, items: list[_Pending]) -> None:
        prompts = [p for item in items for p in item.prompts]
        self.generate_calls += 1
        self.batch_sizes.append(len(prompts))
        seeds = None
        if all(item.params.seed is not None for item in items):
            # One generator per prompt: what a seeded request samples does not depend on
            # the requests it is batched with.
            seeds = [
                i.params.seed if j == 0 else derive(i.params.seed, j)  # type: ignore[misc]
                for i in items
                for j in range(len(i.prompts))
            ]
        try:
            gens = await self.run_model(
                self.policy.generate,
                prompts,
                max_new_tokens=params.max_new_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                stop=list(params.stop) or None,
                top_logprobs=params.top_logprobs,
                seed=params.seed,
                **({"seeds": seeds} if seeds is not None else {}),
            )
        except Exception as e:  # one bad batch must not stop the server
            for item in items:
                if not item.future.done():
                    item.future.set_exception(e)
            return
        start = 0
        for item in items:
            if not item.future.done():
                item.future.set_result(gens[start : start + len(item.prompts)])
            start += len(item.prompts)
