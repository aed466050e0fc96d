"""Small helpers the on-policy loops (GRPO, OPD, SOD, OPSD, Skill-SD) call in the open.

Each algorithm file writes its own loop; these are the steps that read the same in all:
- `start`: the student, AdamW and schedule, restored from the latest checkpoint on resume.
- `sample`: the student plays `tasks_per_step x group_size` episodes with the rollout
  engine, returned as `TrajectoryGroup`s (group member g of task i replays the same seed,
  so a GRPO group shares a task); `set_grpo_advantages` fills each group's advantages.
- `micro_batches`: the step's episodes encoded (`data.encode_episode`) and packed
  `micro_batch_episodes` at a time, each with its episodes, their advantages and its share
  of the step's loss tokens, so that `(loss * share).backward()` over all micro-batches is
  the gradient of the token mean.
- `old_logprobs_and_weights`: what a loss's ratio is taken against (the sampler's logprobs,
  or with `tis_cap` the trainer's own) and the truncated importance weights toward the sampler.
- `StepStats`: the share-weighted loss and metrics of a step, with the sampler-vs-trainer
  logprob gap (`add_sampler_gap`) that every loop logs.
- After the optimizer step (`trainer.optimizer_step`): `log_step`, `evaluate_if_due` (every
  `eval_every` steps and at the end), `print_step`, `checkpoint_if_due` (every `save_every`
  steps and at the end); `finish`: the curves and `RUN/final`.

Single process only: these loops sample on the training process; under torchrun they stop
with a ConfigError rather than silently training one copy per rank.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mentorgym.agents.rollout import run as rollout
from mentorgym.agents.trajectory import Trajectory
from mentorgym.errors import ConfigError
from mentorgym.training import checkpoint, distributed, trainer
from mentorgym.training import student as student_lib
from mentorgym.training.config import OnPolicyConfig
from mentorgym.training.data import Batch, TokenizedEpisode, encode_episode, make_batch
from mentorgym.training.losses import (
    grpo_advantages,
    logprob_gap,
    truncated_importance_weights,
)
from mentorgym.training.student import Student


@dataclass
class OnPolicyRun:
    """What an on-policy loop carries from step to step."""

    student: Student
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    state: checkpoint.RunState
    run_dir: Path
    t0: float = field(default_factory=time.time)


def start(cfg: OnPolicyConfig, run_dir: Path, resume: bool, name: str) -> OnPolicyRun:
    """Build the student, AdamW and the schedule over `cfg.steps`; restore them on resume."""
    if distributed.init_distributed().enabled:
        raise ConfigError(
            "on-policy trainers sample on the training process and run single-process; "
            "start them without torchrun"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    student = student_lib.setup(cfg, run_dir)
    optimizer = trainer.make_optimizer(student.model, cfg)
    scheduler = trainer.make_scheduler(optimizer, cfg, cfg.steps)
    state = checkpoint.RunState()
    ckpt = checkpoint.latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        state = checkpoint.load_checkpoint(ckpt, student.model, optimizer, scheduler, student.dist)
        student.metrics.truncate(lambda r: r.get("step", 0) <= state.step)
        print(f"resuming {name} from {ckpt} (step {state.step})")
    print(f"{'step':>5} {'loss':>9} {'reward':>7} {'success':>7} {'heldout':>8} {'time':>6}")
    return OnPolicyRun(student, optimizer, scheduler, state, run_dir)


@dataclass
class TrajectoryGroup:
    """The episodes of one task (one env seed), their rewards and their advantages."""

    episodes: list[Trajectory]
    rewards: list[float]
    """Each episode's reward (`cfg.reward`: `success` or `return`)."""
    advantages: list[float]
    """Each episode's advantage (zero until a loop sets it, e.g. `set_grpo_advantages`)."""


def sample(student: Student, cfg: OnPolicyConfig, step: int) -> list[TrajectoryGroup]:
    """Step `step`'s episodes as `tasks_per_step` groups of `group_size` (same seed in a group)."""
    student.model.eval()
    policy = student_lib.sampling_policy(
        student, cfg, cfg.rollout_temperature, seed=cfg.seed * 1_000_003 + step
    )
    seeds = [cfg.seed + step * cfg.tasks_per_step + i for i in range(cfg.tasks_per_step)]
    # A group's members are distinct episodes of one seed, all sampled together in one run.
    env_id, env_kwargs = cfg.rollout_env()
    trajs = rollout(
        env_id,
        policy,
        seeds=seeds,
        samples_per_seed=cfg.group_size,
        env_kwargs=env_kwargs,
        concurrency=cfg.concurrency,
        progress=cfg.progress,
    )
    student.model.train()
    g = cfg.group_size
    return [make_group(trajs[i * g : (i + 1) * g], cfg.reward) for i in range(len(seeds))]


def make_group(episodes: list[Trajectory], reward: str) -> TrajectoryGroup:
    rewards = [episode_reward(t, reward) for t in episodes]
    return TrajectoryGroup(episodes, rewards, [0.0] * len(episodes))


def episode_reward(traj: Trajectory, kind: str) -> float:
    """`success` (0 or 1) or `return` (the sum of env rewards)."""
    return float(traj.success) if kind == "success" else traj.return_


def set_grpo_advantages(groups: list[TrajectoryGroup], scale: bool) -> None:
    """Each episode's GRPO advantage: its reward normalized within its group."""
    adv_NG = grpo_advantages(torch.tensor([g.rewards for g in groups]), scale=scale)
    for g, adv_G in zip(groups, adv_NG.tolist(), strict=True):
        g.advantages = adv_G


def episodes_of(groups: list[TrajectoryGroup]) -> list[Trajectory]:
    """The step's episodes, group by group."""
    return [t for g in groups for t in g.episodes]


@dataclass
class MicroBatch:
    """Some of a step's episodes, encoded and packed, with their share of its loss tokens."""

    trajs: list[Trajectory]
    advantages: list[float]
    """Each episode's advantage (its group's, see `TrajectoryGroup`)."""
    group_ids: list[int]
    """Which of the step's groups each episode belongs to."""
    episodes: list[TokenizedEpisode]
    batch: Batch
    share: float
    """This micro-batch's loss tokens over the step's: the weight of its token-mean loss."""


def micro_batches(
    student: Student, cfg: OnPolicyConfig, groups: list[TrajectoryGroup]
) -> list[MicroBatch]:
    """Episodes with at least one trainable turn, encoded and packed `micro_batch_episodes`
    at a time."""
    flat = [
        (t, a, gi)
        for gi, g in enumerate(groups)
        for t, a in zip(g.episodes, g.advantages, strict=True)
    ]
    encoded = [
        encode_episode(student.tok, t, cfg.max_seq_len, None, cfg.context_turns, cfg.system_prompt)
        for t, _, _ in flat
    ]
    keep = [(item, e) for item, e in zip(flat, encoded, strict=True) if e.spans]
    parts: list[MicroBatch] = []
    for i in range(0, len(keep), cfg.micro_batch_episodes):
        chunk = keep[i : i + cfg.micro_batch_episodes]
        trajs = [t for (t, _, _), _ in chunk]
        eps = [e for _, e in chunk]
        batch = make_batch(eps, trajs, student.tok.pad_token_id, student.device)
        adv = [a for (_, a, _), _ in chunk]
        parts.append(MicroBatch(trajs, adv, [gi for (_, _, gi), _ in chunk], eps, batch, 0.0))
    n_total = sum(float(p.batch.mask_BL.sum()) for p in parts)
    for p in parts:
        p.share = float(p.batch.mask_BL.sum()) / max(n_total, 1.0)
    return parts


@dataclass
class StepStats:
    """The step's loss and metrics, each micro-batch's value weighted by its share."""

    loss: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)

    def add(self, mb: MicroBatch, loss: torch.Tensor, **metrics: float) -> None:
        self.loss += float(loss.detach()) * mb.share
        for k, v in metrics.items():
            self.metrics[k] = self.metrics.get(k, 0.0) + float(v) * mb.share

    def keep_max(self, name: str, value: float) -> None:
        """A metric that is the step's largest value, not its mean."""
        self.metrics[name] = max(self.metrics.get(name, float("-inf")), float(value))

    def add_sampler_gap(self, mb: MicroBatch, logp_BL: torch.Tensor) -> None:
        """How far the sampler's logprobs are from the trainer's recomputed (pre-update) ones:
        `sampler_logprob_gap_mean` (token mean over the step), `sampler_logprob_gap_max`."""
        gap_mean, gap_max = logprob_gap(logp_BL, mb.batch.logp_old_BL, mb.batch.mask_BL)
        key = "sampler_logprob_gap_mean"
        self.metrics[key] = self.metrics.get(key, 0.0) + gap_mean * mb.share
        self.keep_max("sampler_logprob_gap_max", gap_max)

    def add_batches(self, parts: list[MicroBatch]) -> None:
        """Count the step's loss tokens and the turns the length limit left out."""
        self.metrics["loss_tokens"] = sum(float(p.batch.mask_BL.sum()) for p in parts)
        self.metrics["dropped_turns"] = float(
            sum(e.dropped_turns for p in parts for e in p.episodes)
        )


def old_logprobs_and_weights(
    cfg: OnPolicyConfig, logp_BL: torch.Tensor, logp_sampler_BL: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The logprobs a loss's ratio is taken against, and the per-token weights of its terms.

    Without `tis_cap`: the sampler's logprobs and no weights (the ratio corrects the mismatch).
    With it: the trainer's own pre-update logprobs, and the truncated importance weights
    min(exp(lp_trainer_old - lp_sampler), tis_cap) toward the sampler as behaviour policy."""
    if cfg.tis_cap is None:
        return logp_sampler_BL, None
    old_BL = logp_BL.detach()
    return old_BL, truncated_importance_weights(old_BL, logp_sampler_BL, cfg.tis_cap)


def log_step(
    run: OnPolicyRun,
    cfg: OnPolicyConfig,
    groups: list[TrajectoryGroup],
    stats: StepStats,
    grad_norm: float,
    lr: float,
) -> dict[str, Any]:
    """Log the step's `kind: train` record (loss, lr, rollout reward and success, the loop's
    own metrics); returns it."""
    trajs = episodes_of(groups)
    rewards = [r for g in groups for r in g.rewards]
    step = run.state.step
    rec: dict[str, Any] = {
        "kind": "train",
        "step": step,
        "loss": stats.loss,
        "lr": lr,
        "grad_norm": grad_norm,
        "episodes": len(trajs),
        "episodes_total": step * cfg.episodes_per_step,
        "rollout_reward": sum(rewards) / len(trajs),
        "rollout_success": sum(t.success for t in trajs) / len(trajs),
        **stats.metrics,
    }
    run.student.metrics.log(rec)
    return rec


def evaluate_if_due(run: OnPolicyRun, cfg: OnPolicyConfig) -> str:
    """Evaluate the student on held-out seeds every `eval_every` steps and at the end; log it.
    Returns the held-out success rate as printed ("-" when not due)."""
    step = run.state.step
    due = step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0)
    if cfg.eval_episodes <= 0 or not due:
        return "-"
    out = run.run_dir / f"eval_step{step:05d}.jsonl"
    summary = student_lib.evaluate(run.student, cfg, out, seed=cfg.seed * 1_000_003 - 1)
    episodes_total = step * cfg.episodes_per_step
    run.student.metrics.log(
        {"kind": "eval", "iteration": step, "step": step, "episodes_total": episodes_total}
        | summary
    )
    return f"{summary['success_rate']:.3f}"


def print_step(run: OnPolicyRun, rec: dict[str, Any], held: str) -> None:
    """One line per step under the header `start` printed."""
    print(
        f"{rec['step']:>5} {rec['loss']:>9.4f} {rec['rollout_reward']:>7.3f} "
        f"{rec['rollout_success']:>7.3f} {held:>8} {time.time() - run.t0:>5.0f}s",
        flush=True,
    )


def checkpoint_if_due(
    run: OnPolicyRun, cfg: OnPolicyConfig, extra_state: dict[str, Any] | None = None
) -> None:
    """A checkpoint every `save_every` steps and at the end, with the algorithm's own state."""
    step = run.state.step
    if step == cfg.steps or (cfg.save_every and step % cfg.save_every == 0):
        run.state.extra = extra_state or {}
        s = run.student
        checkpoint.save_checkpoint(
            run.run_dir, s.model, s.tok, run.optimizer, run.scheduler, run.state, s.dist
        )


def finish(run: OnPolicyRun, cfg: OnPolicyConfig) -> Path:
    """Plot the curves and save the student to `RUN/final`; returns that path."""
    run.student.metrics.plot(run.run_dir / "curves.png")
    return student_lib.save_final(run.student, cfg, run.run_dir)


def saved_extra_state(run_dir: Path) -> dict[str, Any]:
    """The algorithm state saved with the latest checkpoint ({} when there is none)."""
    ckpt = checkpoint.latest_checkpoint(run_dir)
    return {} if ckpt is None else dict(checkpoint.read_run_state(ckpt).extra)


def dry_run_lines(cfg: OnPolicyConfig, name: str, teacher: str | None = None) -> list[str]:
    lines = student_lib.check_setup(cfg, teacher)
    lines.append(
        f"{name}: {cfg.steps} steps x {cfg.tasks_per_step} tasks x {cfg.group_size} episodes "
        f"= {cfg.steps * cfg.episodes_per_step} sampled episodes"
    )
    return lines
