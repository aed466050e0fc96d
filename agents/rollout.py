"""The rollout engine: N episodes at once, policy calls batched, env steps in threads.

Each round, every running episode that waits for an action is served by one
`act_batch` call per policy (one `generate` for the whole batch with `hf:`,
concurrent requests with `openai:`); then all those envs step in a thread pool,
since env steps are mostly I/O (sandboxes, containers). Finished episodes are
written to the output file at once and their slot takes the next episode.

With a teacher and beta, each turn's actor is drawn by `MixturePolicy`; with
`relabel`, every visited state also gets the teacher's label (`teacher_action`),
which is what DAgger trains on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium

from mentorgym.agents.base import Action, EnvPolicy, Policy
from mentorgym.agents.mixture import MixturePolicy
from mentorgym.agents.trajectory import Trajectory, TrajectoryWriter, Turn, read_trajectories
from mentorgym.envs.base import Message
from mentorgym.envs.registry import make
from mentorgym.errors import ConfigError

log = logging.getLogger(__name__)

AnyPolicy = Policy | EnvPolicy


@dataclass(frozen=True)
class EpisodeSpec:
    """Which episode to play: a seed, or a task index of a finite task set."""

    seed: int | None
    index: int | None = None

    @property
    def key(self) -> str:
        return f"index={self.index}" if self.index is not None else f"seed={self.seed}"

    def options(self) -> dict[str, Any] | None:
        return {"index": self.index} if self.index is not None else None


@dataclass
class _Episode:
    spec: EpisodeSpec
    env: gymnasium.Env
    traj: Trajectory
    history: list[Message]
    observation: list[Message]
    """Messages the env produced since the last action."""
    policy_s: float = 0.0
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def episode_specs(
    env_id: str,
    n: int,
    seed: int | None,
    seeds: Sequence[int] | None,
    all_tasks: bool,
    env_kwargs: dict[str, Any],
) -> list[EpisodeSpec]:
    if all_tasks:
        env = make(env_id, **env_kwargs)
        try:
            num = getattr(env.unwrapped, "num_tasks", None)
        finally:
            env.close()
        if not num:
            raise ConfigError(
                f"{env_id} has no finite task set (num_tasks is None); use -n with seeds instead of --all"
            )
        return [EpisodeSpec(seed=seed, index=k) for k in range(num)]
    if seeds is not None:
        return [EpisodeSpec(seed=s) for s in seeds]
    base = 0 if seed is None else seed
    return [EpisodeSpec(seed=base + i) for i in range(n)]


def run(
    env_id: str,
    policy: AnyPolicy,
    n: int = 1,
    *,
    seed: int | None = 0,
    seeds: Sequence[int] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    teacher: AnyPolicy | None = None,
    beta: float = 0.0,
    relabel: bool = True,
    out: str | Path | None = None,
    resume: bool = False,
    concurrency: int = 8,
    all_tasks: bool = False,
    progress: bool = False,
    mixture_seed: int | None = None,
    specs: Sequence[EpisodeSpec] | None = None,
) -> list[Trajectory]:
    """Play episodes of `env_id` and return their trajectories, in episode order.

    Episode i uses seed `seed + i` (or `seeds[i]`); `all_tasks` plays every task of a
    finite task set once instead. `out` appends each finished trajectory to a JSONL
    file as it ends; with `resume`, episodes already in `out` are not played again.
    A `teacher` makes a per-turn mixture with probability `beta` of the teacher
    acting; `relabel` stores the teacher's label for every visited state.
    """
    env_kwargs = dict(env_kwargs or {})
    if specs is None:  # `specs` plays exactly those episodes (a Ray worker's share)
        specs = episode_specs(env_id, n, seed, seeds, all_tasks, env_kwargs)
    mixture = MixturePolicy(policy, teacher, beta, mixture_seed) if teacher is not None else None

    done: dict[str, Trajectory] = {}
    if out is not None and resume and Path(out).exists():
        for traj in read_trajectories(out):
            done[traj.meta.get("episode_key", "")] = traj
    todo = [s for s in specs if s.key not in done]
    if done:
        log.info("resume: %d of %d episodes already in %s", len(specs) - len(todo), len(specs), out)

    writer = TrajectoryWriter(out) if out is not None else None
    meta = {"agent": policy.name, "teacher": teacher.name if teacher else None, "beta": beta}
    results: dict[str, Trajectory] = {}
    bar = _Progress(len(todo)) if progress else None
    slots = max(1, min(concurrency, len(todo)))
    envs = [make(env_id, **env_kwargs) for _ in range(slots)] if todo else []
    free = list(envs)
    running: list[_Episode] = []
    queue = list(todo)
    try:
        with ThreadPoolExecutor(max_workers=slots) as pool:
            while queue or running:
                starting = []
                while queue and free:
                    starting.append((queue.pop(0), free.pop()))
                running += pool.map(lambda a: _start(env_id, a[0], a[1], meta), starting)
                actions = _act(running, policy, teacher, mixture, relabel)
                stepped = list(pool.map(lambda a: _step(*a), zip(running, actions)))
                if bar is not None:
                    bar.turns(len(stepped))
                for ep in stepped:
                    if ep.done:
                        results[ep.spec.key] = ep.traj
                        if writer is not None:
                            writer.write(ep.traj)
                        if bar is not None:
                            bar.episode(ep.traj.success)
                        free.append(ep.env)
                running = [ep for ep in stepped if not ep.done]
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        for env in envs:
            env.close()
    return [results.get(s.key) or done[s.key] for s in specs]


def _start(env_id: str, spec: EpisodeSpec, env: gymnasium.Env, meta: dict[str, Any]) -> _Episode:
    t0 = time.perf_counter()
    observation, info = env.reset(seed=spec.seed, options=spec.options())
    traj = Trajectory(
        env_id=env_id,
        seed=spec.seed,
        task_id=info.get("task_id"),
        meta={**meta, "episode_key": spec.key, "reset_s": time.perf_counter() - t0},
    )
    return _Episode(spec, env, traj, history=list(observation), observation=list(observation))


def _act(
    running: list[_Episode],
    policy: AnyPolicy,
    teacher: AnyPolicy | None,
    mixture: MixturePolicy | None,
    relabel: bool,
) -> list[Action]:
    """One action per running episode, batched per policy; fills `extra` with actor and label."""
    if not running:
        return []
    actors = [mixture.choose() if mixture else "student" for _ in running]
    actions: list[Action | None] = [None] * len(running)
    if teacher is not None:  # first, so that where the teacher has no move the student acts
        idx = [i for i, a in enumerate(actors) if a == "teacher"]
        for i, action in zip(idx, _call(teacher, [running[i] for i in idx])):
            actions[i] = action
            if action is None:  # e.g. the oracle in a dead-end state
                actors[i] = "student"
    idx = [i for i, a in enumerate(actors) if a == "student"]
    for i, action in zip(idx, _call(policy, [running[i] for i in idx])):
        if action is None:
            raise ConfigError(
                f"{policy.name} has no action for this state (the env's oracle has none: "
                "a problem without a known solution, or a dead end); use another agent"
            )
        actions[i] = action
    labels: list[str | None] = [None] * len(running)
    if teacher is not None and relabel:
        need = [i for i, a in enumerate(actors) if a == "student"]
        for i, label in zip(need, _call(teacher, [running[i] for i in need])):
            labels[i] = label.text if label is not None else None  # no label for a dead end
        for i, a in enumerate(actors):
            if a == "teacher":
                labels[i] = actions[i].text  # type: ignore[union-attr]
    for ep, who, label in zip(running, actors, labels):
        ep.extra = {"actor": who if mixture else policy.name, "teacher_action": label}
    return actions  # type: ignore[return-value]


def _call(policy: AnyPolicy, episodes: list[_Episode]) -> list[Action | None]:
    if not episodes:
        return []
    t0 = time.perf_counter()
    if isinstance(policy, EnvPolicy) and not isinstance(policy, Policy):
        actions = [policy.act_env(ep.env) for ep in episodes]
    else:
        actions = list(policy.act_batch([ep.history for ep in episodes]))
    dt = time.perf_counter() - t0
    for ep in episodes:
        ep.policy_s += dt  # each episode waited for the whole batch
    return actions


def _step(ep: _Episode, action: Action) -> _Episode:
    t0 = time.perf_counter()
    try:
        messages, reward, terminated, truncated, info = ep.env.step(action.text)
    except Exception as e:  # an env bug or a dead container ends this episode, not the run
        log.warning("episode %s: env.step raised %s: %s", ep.spec.key, type(e).__name__, e)
        messages, reward, terminated, truncated = [], 0.0, False, True
        info = {"error": f"{type(e).__name__}: {e}"}
    if truncated and not terminated and hasattr(ep.env.unwrapped, "on_truncation"):
        extra_reward, extra_info = ep.env.unwrapped.on_truncation()
        reward, info = reward + extra_reward, {**info, **extra_info}
    env_s = time.perf_counter() - t0
    ep.traj.turns.append(
        Turn(
            observation=ep.observation,
            actor=ep.extra["actor"],
            action=action.text,
            reward=float(reward),
            token_ids=action.token_ids,
            logprobs=action.logprobs,
            teacher_action=ep.extra["teacher_action"],
            timing={"policy_s": ep.policy_s, "env_s": env_s},
            info=dict(info),
        )
    )
    ep.policy_s = 0.0
    ep.history = ep.history + [{"role": "assistant", "content": action.text}] + list(messages)
    ep.observation = list(messages)
    if terminated or truncated:
        ep.done = True
        ep.traj.final_observation = list(messages)
        ep.traj.terminated, ep.traj.truncated = bool(terminated), bool(truncated)
        ep.traj.success = bool(info.get("success", False))
        if ep.traj.task_id is None:
            ep.traj.task_id = info.get("task_id")
    return ep


def summarize(trajs: Sequence[Trajectory]) -> dict[str, Any]:
    """Episode-level statistics that `mentorgym eval --json` prints."""
    n = len(trajs)
    if n == 0:
        return {"episodes": 0, "success_rate": 0.0, "mean_return": 0.0, "mean_turns": 0.0}
    turns = [len(t.turns) for t in trajs]
    format_errors = sum(bool(turn.info.get("format_error")) for t in trajs for turn in t.turns)
    return {
        "episodes": n,
        "success_rate": sum(t.success for t in trajs) / n,
        "mean_return": sum(t.return_ for t in trajs) / n,
        "mean_turns": sum(turns) / n,
        "format_error_rate": format_errors / max(1, sum(turns)),
        "truncated_rate": sum(t.truncated for t in trajs) / n,
    }


class _Progress:
    """A rich progress bar: episodes done, success so far, turns per second."""

    def __init__(self, total: int):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("rollout"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            transient=False,
        )
        self._task = self._progress.add_task("rollout", total=total, stats="")
        self._progress.start()
        self._t0 = time.perf_counter()
        self._turns = 0
        self._done = 0
        self._success = 0

    def turns(self, k: int) -> None:
        self._turns += k
        self._refresh()

    def episode(self, success: bool) -> None:
        self._done += 1
        self._success += int(success)
        self._progress.advance(self._task)
        self._refresh()

    def _refresh(self) -> None:
        rate = self._turns / max(1e-9, time.perf_counter() - self._t0)
        success = self._success / self._done if self._done else 0.0
        self._progress.update(self._task, stats=f"success {success:.2f}  {rate:.1f} turns/s")

    def close(self) -> None:
        self._progress.stop()
