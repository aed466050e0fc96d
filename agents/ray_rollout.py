"""Rollouts on Ray: episodes run in actors that own their envs and sandboxes, on any node.

    mentorgym rollout mentorgym/SWE-v0 --all --agent openai:http://gpu0:8000/v1#qwen \\
        --executor ray --address HEAD:6379 --concurrency 64 --out trajs.jsonl

Each worker is a Ray actor that builds the policies from their specs once (an `openai:`
endpoint such as `vllm serve`, the env's oracle, a replay script) and plays one episode
at a time with the same engine as a local rollout (`rollout.run`), so its envs and their
Docker containers live on the worker's node, on that node's engine. Workers are spread
over the nodes (Ray's SPREAD strategy). Each trajectory comes back as its episode ends
and is appended to `out` at once, in the same JSONL as a local rollout; `resume` skips
episodes already there.

A worker that dies mid-episode (killed, out of memory, its node lost) loses that episode
only: it is played again on a fresh worker up to `max_retries` times, then reported in
`failures`, and the run goes on. An error in the episode itself (a bad agent spec, a
policy with no action) stops the run, as it would locally.

With the same seeds and a deterministic policy the trajectories equal a local run's.
A teacher mixture (`beta`) draws its coins per episode here (seeded from `mixture_seed`
and the episode's position), so those draws differ from a local run's shared sequence.
Model policies in workers are best endpoints (`openai:` to `vllm serve`); an `hf:`/`tiny`
model loads one copy per worker, or, with `shared_policy`, one copy in a Ray actor that
serves every worker.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mentorgym.agents.base import Action, BatchedPolicy
from mentorgym.agents.rollout import EpisodeSpec, episode_specs, episodes_done
from mentorgym.agents.trajectory import Trajectory, TrajectoryWriter
from mentorgym.envs.base import Message
from mentorgym.errors import ConfigError, MentorgymError
from mentorgym.sandboxes.pool import release_all

log = logging.getLogger(__name__)

LOCAL_OBJECT_STORE_BYTES = 200 * 1024 * 1024
"""Object store of a Ray that `run_ray` starts itself: trajectories are small."""


@dataclass
class EpisodeFailure:
    key: str
    attempts: int
    error: str


@dataclass
class RayRollout:
    trajectories: list[Trajectory]
    """Finished episodes, in episode order (failed ones are missing)."""
    failures: list[EpisodeFailure] = field(default_factory=list)


class PolicyActor:
    """A Ray actor that holds one model policy and serves every worker's `act_batch` calls
    (one copy of the weights instead of one per worker)."""

    def __init__(self, spec: str, gen: dict[str, Any]):
        from mentorgym.agents.base import Policy
        from mentorgym.agents.specs import load_policy

        self.policy = load_policy(spec, **gen)
        if not isinstance(self.policy, Policy):
            raise ConfigError(
                f"{spec!r} reads the env itself (expert, random): it cannot be a shared policy"
            )

    def name(self) -> str:
        return self.policy.name

    def act_batch(self, histories: list[list[Message]]) -> list[Action]:
        return list(self.policy.act_batch(histories))


class ActorPolicy(BatchedPolicy):
    """A Policy whose turns come from a `PolicyActor` (in a worker: the shared model)."""

    def __init__(self, handle: Any, name: str):
        self.handle, self.name = handle, name

    def act_batch(self, histories: list[list[Message]]) -> list[Action]:
        import ray

        return ray.get(self.handle.act_batch.remote(histories))


class EpisodeWorker:
    """A Ray actor: holds the policies, plays one episode per call on its own node."""

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        agent: str | tuple[Any, str],
        teacher: str | None,
        gen: dict[str, Any],
        beta: float,
        relabel: bool,
    ):
        import mentorgym  # noqa: F401  (registers the built-in envs in this process)
        from mentorgym.agents.specs import load_policy

        self.env_id, self.env_kwargs = env_id, env_kwargs
        if isinstance(agent, tuple):  # (PolicyActor handle, its name): the shared model
            self.policy: Any = ActorPolicy(*agent)
        else:
            self.policy = load_policy(agent, **gen)
        self.teacher = load_policy(teacher, **gen) if teacher else None
        self.beta, self.relabel = beta, relabel

    def ready(self) -> int:
        return os.getpid()

    def close(self) -> None:
        """Remove this worker's warm containers now (Ray may end it without running atexit;
        a killed worker's are reaped later by their owner pid)."""
        release_all()

    def play(self, seed: int | None, index: int | None, mixture_seed: int | None) -> dict:
        import ray

        from mentorgym.agents.rollout import run

        [traj] = run(
            self.env_id,
            self.policy,
            specs=[EpisodeSpec(seed, index)],
            env_kwargs=self.env_kwargs,
            teacher=self.teacher,
            beta=self.beta,
            relabel=self.relabel,
            concurrency=1,
            mixture_seed=mixture_seed,
        )
        traj.meta["executor"] = "ray"
        traj.meta["node"] = ray.get_runtime_context().get_node_id()
        return traj.to_dict()


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray needs Ray: pip install 'mentorgym[ray]' (or pip install ray)"
        ) from None
    return ray


def connect(address: str | None) -> bool:
    """Join the cluster at `address` ("auto": the one this machine joined), or start a small
    local Ray when None. Returns whether this call started or joined it (and should leave)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            include_dashboard=False,
            log_to_driver=False,
        )
    return True


def run_ray(
    env_id: str,
    agent: str,
    n: int = 1,
    *,
    seed: int | None = 0,
    seeds: Sequence[int] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    teacher: str | None = None,
    beta: float = 0.0,
    relabel: bool = True,
    out: str | Path | None = None,
    resume: bool = False,
    concurrency: int = 8,
    all_tasks: bool = False,
    mixture_seed: int | None = None,
    gen: dict[str, Any] | None = None,
    address: str | None = None,
    max_retries: int = 1,
    cpus_per_worker: float = 0.0,
    shared_policy: bool = False,
) -> RayRollout:
    """Play episodes of `env_id` on Ray workers; the arguments mean what `rollout.run`'s do,
    with the agent and teacher given as specs (each worker builds its own).

    `address`: the Ray cluster ("HOST:PORT" of `ray start --head`, or "auto"); None starts
    a local Ray for this call. `concurrency` workers play at once; `cpus_per_worker` is
    the CPU each reserves (0: episodes wait on I/O, so workers only spread over nodes).
    `shared_policy`: one Ray actor loads the agent's model and every worker's turns go to
    it, instead of a copy per worker (for `hf:`/`tiny`; endpoints need no such thing).
    """
    if agent == "human" or teacher == "human":
        raise ConfigError("a human agent cannot play on Ray workers; use --executor local")
    env_kwargs = dict(env_kwargs or {})
    gen = {k: v for k, v in (gen or {}).items() if v is not None}
    specs = episode_specs(env_id, n, seed, seeds, all_tasks, env_kwargs)
    done = episodes_done(out, resume)
    todo = [(k, s) for k, s in enumerate(specs) if s.key not in done]
    if not todo:
        return RayRollout([done[s.key] for s in specs])

    ray = import_ray()
    leave = connect(address)
    pool: WorkerPool | None = None
    writer: TrajectoryWriter | None = None
    try:
        acting = shared_policy_actor(ray, agent, gen, cpus_per_worker) if shared_policy else agent
        pool = WorkerPool(
            ray, cpus_per_worker, (env_id, env_kwargs, acting, teacher, gen, beta, relabel)
        )
        writer = TrajectoryWriter(out) if out is not None else None
        pool.start(max(1, min(concurrency, len(todo))))
        results, failures = pool.play(todo, mixture_seed, max_retries, writer)
    finally:
        if writer is not None:
            writer.close()
        if pool is not None:
            pool.close()
        if leave:
            ray.shutdown()
    merged = {**done, **results}
    return RayRollout([merged[s.key] for s in specs if s.key in merged], failures)


def shared_policy_actor(ray: Any, agent: str, gen: dict[str, Any], cpus: float) -> tuple[Any, str]:
    """One `PolicyActor` that loads the agent's model for every worker: (its handle, its name)."""
    holder = ray.remote(num_cpus=cpus, max_restarts=-1)(PolicyActor).remote(agent, gen)
    try:
        return holder, ray.get(holder.name.remote())
    except ray.exceptions.RayActorError as e:
        raise ConfigError(f"the shared policy {agent!r} could not start: {e}") from None


class WorkerPool:
    """`EpisodeWorker`s spread over the cluster, fed one episode at a time; a worker that dies
    is replaced and its episode retried up to `max_retries` times, then reported."""

    def __init__(self, ray: Any, cpus: float, worker_args: tuple[Any, ...]):
        self.ray = ray
        self._remote = ray.remote(num_cpus=cpus, max_restarts=0)(EpisodeWorker)
        self._args = worker_args
        self.workers: list[Any] = []

    def _new(self) -> Any:
        return self._remote.options(scheduling_strategy="SPREAD").remote(*self._args)

    def start(self, size: int) -> None:
        self.workers = [self._new() for _ in range(size)]
        try:
            self.ray.get([w.ready.remote() for w in self.workers])
        except self.ray.exceptions.RayActorError as e:
            raise ConfigError(f"a Ray worker could not start: {e}") from None

    def play(
        self,
        todo: list[tuple[int, EpisodeSpec]],
        mixture_seed: int | None,
        max_retries: int,
        writer: TrajectoryWriter | None,
    ) -> tuple[dict[str, Trajectory], list[EpisodeFailure]]:
        """Every episode of `todo` (its index k seeds its mixture coin), as idle workers free up."""
        queue = deque((k, spec, 1) for k, spec in todo)
        idle = list(range(len(self.workers)))
        pending: dict[Any, tuple[int, EpisodeSpec, int, int]] = {}  # slot, spec, attempt, k
        results: dict[str, Trajectory] = {}
        failures: list[EpisodeFailure] = []
        while queue or pending:
            while queue and idle:
                slot = idle.pop()
                k, spec, attempt = queue.popleft()
                mseed = None if mixture_seed is None else mixture_seed * 1_000_003 + k
                ref = self.workers[slot].play.remote(spec.seed, spec.index, mseed)
                pending[ref] = (slot, spec, attempt, k)
            [ref], _ = self.ray.wait(list(pending), num_returns=1)
            slot, spec, attempt, k = pending.pop(ref)
            traj = self._result(ref, slot)
            idle.append(slot)
            if isinstance(traj, Trajectory):
                results[spec.key] = traj
                if writer is not None:
                    writer.write(traj)
            elif attempt <= max_retries:
                log.warning("episode %s: worker died (%s); retrying", spec.key, traj)
                queue.appendleft((k, spec, attempt + 1))
            else:
                log.warning("episode %s: worker died %d times; reported", spec.key, attempt)
                failures.append(EpisodeFailure(spec.key, attempt, traj))
        return results, failures

    def _result(self, ref: Any, slot: int) -> Trajectory | str:
        """The episode's trajectory, or why its worker died (the worker is replaced); an error
        of mentorgym's own inside the episode is raised here as itself."""
        try:
            return Trajectory.from_dict(self.ray.get(ref))
        except self.ray.exceptions.RayActorError as e:  # the worker died mid-episode
            self.workers[slot] = self._new()
            return _brief(e)
        except self.ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, MentorgymError):
                raise cause from None
            raise

    def close(self) -> None:
        """Remove every worker's containers (a dead worker has nothing to close)."""
        closing = [w.close.remote() for w in self.workers]
        try:
            self.ray.get(closing, timeout=120)
        except (self.ray.exceptions.RayError, TimeoutError) as e:
            log.info("closing Ray workers: %s", _brief(e))


def _brief(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]
