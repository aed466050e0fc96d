"""DAgger with turn-level interpolation (Revisiting DAgger in the Era of LLM-Agents).

Iteration i:
1. Roll out `episodes` episodes on training seeds with a per-turn mixture: each turn
   is written wholly by the teacher with probability beta_i, else by the student
   (sampling at `rollout_temperature`). beta_0 = `beta_0` and beta decays to 0 over
   `beta_decay_iters` iterations (`linear`, `cosine`, `exponential`, `step`).
2. Every visited state is labeled with the teacher's action (the engine's relabeling);
   the trajectories are saved in `RUN/iter_XX/rollouts.jsonl`.
3. The labels of all iterations so far are aggregated (optionally only the last
   `window` iterations, de-duplicated, capped at the newest `max_labels`, older
   iterations weighted by `old_weight ** age`), and the student is trained by
   cross-entropy on the aggregate for `steps_per_iteration` steps.
4. The pure student (beta = 0, `eval_temperature`) is evaluated on `eval_episodes`
   held-out seeds from `eval_seed` (disjoint from the training seeds), printed as one
   line and logged.

Resume (`--resume RUN`) works at iteration granularity (finished iterations are not
redone; a half-collected iteration replays only its unfinished episodes) and within
an iteration's training from the step checkpoints. The final student is `RUN/final`.

Run: `mentorgym train configs/sokoban_dagger.yaml`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mentorgym.agents.rollout import episode_order
from mentorgym.agents.trajectory import BadLines, Trajectory, read_trajectories
from mentorgym.errors import ConfigError
from mentorgym.training import checkpoint, sft, trainer
from mentorgym.training import student as student_lib
from mentorgym.training.config import SupervisedConfig
from mentorgym.training.data import BuildStats, Example, dedupe, examples_from_trajectories
from mentorgym.training.student import Student


@dataclass
class Config(SupervisedConfig):
    iterations: int = 6
    """DAgger iterations (rollout, label, aggregate, train, evaluate)."""
    episodes: int = 64
    """Training episodes per iteration; iteration i uses seeds seed + i*episodes + [0, episodes)."""
    beta_0: float = 1.0
    """Probability that the teacher writes a turn in iteration 0."""
    beta_schedule: str = "linear"
    """How beta decays to 0: `linear`, `cosine`, `exponential`, `step` or `constant`."""
    beta_decay_iters: int = 3
    """Iterations over which beta reaches 0 (`exponential`: beta halves every this/3 iterations)."""
    rollout_temperature: float = 1.0
    """Student sampling temperature during DAgger rollouts."""
    window: int = 0
    """Aggregate only the labels of the last `window` iterations (0: all of them)."""
    dedupe: bool = False
    """Drop repeated (context, label) examples from the aggregate."""
    max_labels: int = 0
    """Cap on the aggregate, keeping the newest labels (0: no cap)."""
    old_weight: float = 1.0
    """Loss weight factor per iteration of age (1: all labels equal; 0.5 halves each older one)."""
    student_labels_only: bool = False
    """After iteration 0, train only on the labels of states where the student acted; the
    teacher's turns stay in the context, unlabeled."""
    steps_per_iteration: int = 100
    """Optimizer steps on the aggregate after each iteration's rollouts."""
    lr_schedule: str = "iteration"
    """`iteration`: a fresh AdamW, warmup and cosine decay in each iteration's training;
    `run`: one AdamW and one warmup + cosine over all iterations' steps."""
    # Defaults that differ from the core's.
    warmup_steps: int = 10
    save_every: int = 50

    def validate(self) -> None:
        super().validate()
        if self.iterations <= 0 or self.episodes <= 0 or self.steps_per_iteration <= 0:
            raise ConfigError("iterations, episodes and steps_per_iteration must be > 0")
        if self.beta_schedule not in SCHEDULES:
            raise ConfigError(
                f"beta_schedule {self.beta_schedule!r}: use one of {sorted(SCHEDULES)}"
            )
        if not 0.0 <= self.beta_0 <= 1.0:
            raise ConfigError(f"beta_0 must be in [0, 1], got {self.beta_0}")
        if self.beta_decay_iters <= 0:
            raise ConfigError("beta_decay_iters must be > 0")
        if self.lr_schedule not in ("iteration", "run"):
            raise ConfigError(f"lr_schedule {self.lr_schedule!r}: use iteration or run")
        if self.old_weight < 0 or self.window < 0 or self.max_labels < 0:
            raise ConfigError("old_weight, window and max_labels must be >= 0")
        self.check_eval_seed(self.iterations * self.episodes)


@dataclass
class Position:
    """Where a DAgger run stands (saved in each checkpoint's `state.json` as `extra`)."""

    iteration: int = 0
    phase: str = "collect"
    """`collect`: iteration `iteration` has not finished its rollouts; `train`: it is training."""
    labels_total: int = 0
    """Teacher labels collected so far (the teacher budget spent)."""


def _linear(i: int, n: int) -> float:
    return max(0.0, 1.0 - i / n)


def _cosine(i: int, n: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(i / n, 1.0)))


def _exponential(i: int, n: int) -> float:
    # Halves every n/3 iterations and is cut to 0 at n, so "decay length" means the same thing.
    return 0.0 if i >= n else 0.5 ** (3 * i / n)


def _step(i: int, n: int) -> float:
    return 1.0 if i < n else 0.0


def _constant(i: int, n: int) -> float:
    return 1.0


SCHEDULES = {
    "linear": _linear,
    "cosine": _cosine,
    "exponential": _exponential,
    "step": _step,
    "constant": _constant,
}


def beta_at(cfg: Config, i: int) -> float:
    """The teacher's per-turn probability in iteration i (beta_0 at i = 0, 0 from the decay length on)."""
    return cfg.beta_0 * SCHEDULES[cfg.beta_schedule](i, cfg.beta_decay_iters)


def iter_dir(run_dir: Path, i: int) -> Path:
    return run_dir / f"iter_{i:02d}"


def collect(student: Student, cfg: Config, run_dir: Path, i: int) -> list[Trajectory]:
    """Iteration i's mixture rollouts, every state labeled by the teacher (main rank only)."""
    from mentorgym.agents.rollout import run
    from mentorgym.agents.specs import load_policy

    weights_path = None
    if student.dist.enabled and cfg.strategy == "fsdp":
        # A sharded model cannot generate on one rank: gather a full copy for the rollouts.
        weights_path = str(iter_dir(run_dir, i) / "student")
        checkpoint.save_model(student.model, student.tok, Path(weights_path), student.dist)
    if not student.dist.is_main:
        return []
    teacher = load_policy(cfg.teacher, temperature=0.0, max_new_tokens=cfg.max_new_tokens)
    student.model.eval()
    policy = student_lib.sampling_policy(
        student, cfg, cfg.rollout_temperature, seed=cfg.seed, weights_path=weights_path
    )
    env_id, env_kwargs = cfg.rollout_env()
    trajs = run(
        env_id,
        policy,
        cfg.episodes,
        seed=cfg.seed + i * cfg.episodes,
        env_kwargs=env_kwargs,
        teacher=teacher,
        beta=beta_at(cfg, i),
        relabel=True,
        out=iter_dir(run_dir, i) / "rollouts.jsonl",
        resume=True,
        concurrency=cfg.concurrency,
        progress=cfg.progress,
        mixture_seed=cfg.seed * 1000 + i,
    )
    # The sampler against the trainer on the student's sampled tokens, as the on-policy loops log it.
    gap = student_lib.sampler_gap(student, cfg, trajs) if weights_path is None else {}
    if gap:
        student.metrics.log({"kind": "sampler_gap", "iteration": i, **gap})
    student.model.train()
    return trajs


def aggregate(
    cfg: Config, run_dir: Path, i: int, tok: Any, foreign_ids: bool
) -> tuple[list[Example], BuildStats, dict[str, Any]]:
    """The training set after iteration i: labels of iterations (i - window, i], weighted by
    age. `foreign_ids`: whether the teacher's token ids are the student's (else re-encoded)."""
    first = max(0, i - cfg.window + 1) if cfg.window else 0
    examples: list[Example] = []
    total = BuildStats()
    info: dict[str, Any] = {}
    bad = BadLines()
    for j in range(first, i + 1):
        path = iter_dir(run_dir, j) / "rollouts.jsonl"
        trajs = read_trajectories(path, on_bad_line=cfg.bad_lines, bad=bad)  # type: ignore[arg-type]
        trajs = sorted(trajs, key=episode_order)  # file order is the order episodes ended
        student_only = cfg.student_labels_only and j > 0
        exs, stats = examples_from_trajectories(
            trajs,
            tok,
            max_seq_len=cfg.max_seq_len,
            target="teacher",
            weight=cfg.old_weight ** (i - j),
            meta={"iteration": j},
            last_turns=cfg.context_turns,
            system_prompt=cfg.system_prompt,
            foreign_ids=foreign_ids,
            actors=frozenset({"student"}) if student_only else None,
        )
        total.add(stats)
        examples += exs
        if j == i:
            turns = [turn for t in trajs for turn in t.turns]
            info = {
                "new_labels": len(exs),
                "student_turn_frac": sum(turn.actor == "student" for turn in turns)
                / max(len(turns), 1),
                "rollout_success": sum(t.success for t in trajs) / max(len(trajs), 1),
                "unlabeled_turns": stats.unlabeled,  # reached states the teacher left unlabeled
            }
    info["bad_lines"] = bad.count
    if cfg.dedupe:
        examples = dedupe(examples[::-1])[::-1]  # keep the newest copy of each example
    if cfg.max_labels:
        examples = examples[-cfg.max_labels :]
    return examples, total, info


def train(cfg: Config, run_dir: Path, resume: bool) -> Path:
    """DAgger end to end; returns `RUN/final` (the student in HF format)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    student = student_lib.setup(cfg, run_dir, cfg.strategy)
    main = student.dist.is_main
    t0 = time.time()
    foreign_ids = student_lib.teacher_shares_tokenizer(cfg.teacher, student.tok)
    # `lr_schedule: run` keeps one AdamW across iterations; each iteration makes its own otherwise.
    carried = trainer.make_optimizer(student.model, cfg) if cfg.lr_schedule == "run" else None
    pos, state, ckpt = resume_position(student, cfg, run_dir, resume, carried)
    if main:
        print(
            f"{'iter':>4} {'beta':>5} {'labels':>7} {'agg':>6} {'stud%':>6} {'roll':>5} {'loss':>7} {'heldout':>8} {'time':>6}"
        )
    for i in range(pos.iteration, cfg.iterations):
        # 1. collect: mixture rollouts on this iteration's seeds, every state labeled
        if pos.phase == "collect":
            collect(student, cfg, run_dir, i)
            if student.dist.enabled:
                dist.barrier()
        # 2. aggregate: the labels of this and earlier iterations
        examples, stats, info = aggregate(cfg, run_dir, i, student.tok, foreign_ids)
        if main and stats.dropped:
            print(stats.log(cfg.max_seq_len))
        if pos.phase == "collect":
            pos = Position(i, "train", pos.labels_total + info["new_labels"])
            state = checkpoint.RunState(global_step=state.global_step, extra=asdict(pos))
        # 3. fit: cross-entropy steps on the aggregate, behaviour cloning's loop (`sft.fit`),
        # resumed mid-iteration from `ckpt`
        phase = iteration_phase(cfg, i, state, ckpt, carried)
        fitted = sft.fit(student, cfg, run_dir, examples, phase)
        state = fitted.state
        ckpt = None
        # 4. evaluate the pure student on held-out seeds
        record: dict[str, Any] = {
            "kind": "eval",
            "iteration": i,
            "beta": beta_at(cfg, i),
            "step": state.global_step,
            "aggregate": len(examples),
            "labels_total": pos.labels_total,
            **info,
        }
        if main:
            if cfg.eval_episodes > 0:
                out = iter_dir(run_dir, i) / "eval.jsonl"
                record.update(student_lib.evaluate(student, cfg, out))
            student.metrics.log(record)
            student.metrics.plot(run_dir / "curves.png")
            print_iteration(student, record, len(examples), info, time.time() - t0)
        if student.dist.enabled:
            dist.barrier()
        # 5. the iteration-boundary checkpoint: the weights (and the AdamW, when carried over)
        pos = Position(i + 1, "collect", pos.labels_total)
        state = checkpoint.RunState(global_step=state.global_step, extra=asdict(pos))
        fitted.state = state
        sft.save_phase(student, run_dir, fitted)
    return student_lib.save_final(student, cfg, run_dir)


def iteration_phase(
    cfg: Config,
    i: int,
    state: checkpoint.RunState,
    ckpt: Path | None,
    carried: torch.optim.Optimizer | None,
) -> trainer.Phase:
    """Iteration i's training: `steps_per_iteration` steps with a data order of its own, on a
    fresh AdamW and schedule, or (`lr_schedule: run`) at its place in one schedule over the run."""
    total = cfg.iterations * cfg.steps_per_iteration
    return trainer.Phase(
        n_steps=cfg.steps_per_iteration,
        data_seed=cfg.seed * 1000 + i,
        resume_from=ckpt,
        state=state,
        desc=f"iter {i}",
        extra_metrics={"iteration": i},
        optimizer=carried,
        lr_span=(i * cfg.steps_per_iteration, total) if carried is not None else None,
    )


def resume_position(
    student: Student,
    cfg: Config,
    run_dir: Path,
    resume: bool,
    carried: Any,
) -> tuple[Position, checkpoint.RunState, Path | None]:
    """Where a (resumed) run starts: its Position, RunState and a mid-iteration checkpoint
    to continue training from (None when it starts at an iteration boundary)."""
    ckpt = checkpoint.latest_checkpoint(run_dir) if resume else None
    if ckpt is None:
        pos = Position()
        return pos, checkpoint.RunState(extra=asdict(pos)), None
    state = checkpoint.read_run_state(ckpt)
    pos = Position(**state.extra)
    student.metrics.truncate(
        lambda r: (
            (r.get("kind") == "train" and r["step"] <= state.global_step)
            or (r.get("kind") == "eval" and r["iteration"] < pos.iteration)
        )
    )
    if pos.phase == "collect" and carried is not None:
        # Between iterations, one schedule over the run: weights and AdamW carry over.
        scheduler = trainer.make_scheduler(carried, cfg, 1)
        checkpoint.load_checkpoint(ckpt, student.model, carried, scheduler, student.dist)
        ckpt = None
    elif pos.phase == "collect":
        # Between iterations: only the weights carry over (each iteration has a fresh optimizer).
        checkpoint.load_weights(ckpt / "model", student.model)
        ckpt = None
    if student.dist.is_main:
        print(
            f"resuming from {run_dir}: iteration {pos.iteration}, phase {pos.phase}, step {state.step}"
        )
    return pos, state, ckpt


def print_iteration(
    student: Student, record: dict[str, Any], n_agg: int, info: dict[str, Any], secs: float
) -> None:
    last_loss = next(
        (r["loss"] for r in reversed(student.metrics.records) if r.get("kind") == "train"),
        float("nan"),
    )
    held = f"{record['success_rate']:.3f}" if "success_rate" in record else "-"
    print(
        f"{record['iteration']:>4} {record['beta']:>5.2f} {record['labels_total']:>7} {n_agg:>6} "
        f"{100 * info['student_turn_frac']:>5.0f}% {info['rollout_success']:>5.2f} "
        f"{last_loss:>7.4f} {held:>8} {secs:>5.0f}s",
        flush=True,
    )


def dry_run(cfg: Config) -> list[str]:
    """Validate the config and build everything but the weights; returns report lines."""
    lines = student_lib.check_setup(cfg, cfg.teacher)
    betas = ", ".join(f"{beta_at(cfg, i):.2f}" for i in range(cfg.iterations))
    lines.append(
        f"dagger: {cfg.iterations} iterations x {cfg.episodes} episodes, beta per iteration: {betas}"
    )
    last_train_seed = cfg.seed + cfg.iterations * cfg.episodes - 1
    lines.append(
        f"seeds: training {cfg.seed}..{last_train_seed}, held-out {cfg.eval_seed}..{cfg.eval_seed + cfg.eval_episodes - 1}"
    )
    return lines
