"""Small helpers the on-policy loops (GRPO, OPD, SOD, OPSD, Skill-SD) call in the open.

Each algorithm file writes its own loop; these are the steps that read the same in all:
- `start`: the student, AdamW and schedule, restored from the latest checkpoint on resume.
- `sample`: the student plays `tasks_per_step x group_size` episodes with the rollout
  engine (group member g of task i replays the same seed, so GRPO groups share a task).
- `micro_batches`: the step's episodes encoded (`data.encode_episode`) and packed
  `micro_batch_episodes` at a time, each with its share of the step's loss tokens, so that
  `(loss * share).backward()` over all micro-batches is the gradient of the token mean.
- `behaviour`: what a loss's ratio is taken against (the sampler's logprobs, or with
  `tis_cap` the trainer's own) and the truncated importance weights toward the sampler.
- `StepStats`: the share-weighted loss and metrics of a step, with the sampler-vs-trainer
  logprob gap (`add_sampler_gap`) that every loop logs.
- `end_step`: log the step, evaluate on held-out seeds every `eval_every` steps and at the
  end, checkpoint every `save_every` steps; `finish`: the curves and `RUN/final`.

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
from mentorgym.training import student as student_lib
from mentorgym.training import trainer
from mentorgym.training.config import OnPolicyConfig
from mentorgym.training.data import Batch, TokenizedEpisode, encode_episode, make_batch
from mentorgym.training.losses import (
    grpo_advantages,
    logprob_gap,
    truncated_importance_weights,
)
from mentorgym.training.student import Student


@dataclass
class Run:
    """What an on-policy loop carries from step to step."""

    student: Student
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    state: trainer.RunState
    run_dir: Path
    t0: float = field(default_factory=time.time)


def start(cfg: OnPolicyConfig, run_dir: Path, resume: bool, name: str) -> Run:
    """Build the student, AdamW and the schedule over `cfg.steps`; restore them on resume."""
    if trainer.init_distributed().enabled:
        raise ConfigError(
            "on-policy trainers sample on the training process and run single-process; "
            "start them without torchrun"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    student = student_lib.setup(cfg, run_dir)
    optimizer = trainer.make_optimizer(student.model, cfg)
    scheduler = trainer.make_scheduler(optimizer, cfg, cfg.steps)
    state = trainer.RunState()
    ckpt = trainer.latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        state = trainer.load_checkpoint(ckpt, student.model, optimizer, scheduler, student.dist)
        student.metrics.truncate(lambda r: r.get("step", 0) <= state.step)
        print(f"resuming {name} from {ckpt} (step {state.step})")
    print(f"{'step':>5} {'loss':>9} {'reward':>7} {'success':>7} {'heldout':>8} {'time':>6}")
    return Run(student, optimizer, scheduler, state, run_dir)


def sample(student: Student, cfg: OnPolicyConfig, step: int) -> list[list[Trajectory]]:
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
    return [trajs[i * g : (i + 1) * g] for i in range(len(seeds))]


def episode_reward(traj: Trajectory, kind: str) -> float:
    """`success` (0 or 1) or `return` (the sum of env rewards)."""
    return float(traj.success) if kind == "success" else traj.return_


def group_advantages(groups: list[list[Trajectory]], reward: str, scale: bool) -> list[float]:
    """One GRPO advantage per episode, in the flattened order of `groups`."""
    rewards_NG = torch.tensor([[episode_reward(t, reward) for t in g] for g in groups])
    return grpo_advantages(rewards_NG, scale=scale).flatten().tolist()


@dataclass
class MicroBatch:
    """Some of a step's episodes, encoded and packed, with their share of its loss tokens."""

    idx: list[int]
    """Indices into the step's flattened episodes."""
    episodes: list[TokenizedEpisode]
    batch: Batch
    share: float
    """This micro-batch's loss tokens over the step's: the weight of its token-mean loss."""


def micro_batches(
    student: Student, cfg: OnPolicyConfig, trajs: list[Trajectory]
) -> list[MicroBatch]:
    """Episodes with at least one trainable turn, encoded and packed `micro_batch_episodes`
    at a time."""
    eps = [
        encode_episode(student.tok, t, cfg.max_seq_len, None, cfg.context_turns, cfg.system_prompt)
        for t in trajs
    ]
    keep = [i for i, e in enumerate(eps) if e.spans]
    parts: list[MicroBatch] = []
    for i in range(0, len(keep), cfg.micro_batch_episodes):
        idx = keep[i : i + cfg.micro_batch_episodes]
        chunk = [eps[j] for j in idx]
        pad = student.tok.pad_token_id
        batch = make_batch(chunk, [trajs[j] for j in idx], pad, student.device)
        parts.append(MicroBatch(idx, chunk, batch, 0.0))
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


def behaviour(
    cfg: OnPolicyConfig, logp_BL: torch.Tensor, logp_sampler_BL: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What a loss's ratio is taken against, and the per-token weights of its terms.

    Without `tis_cap`: the sampler's logprobs and no weights (the ratio corrects the mismatch).
    With it: the trainer's own pre-update logprobs, and the truncated importance weights
    min(exp(lp_trainer_old - lp_sampler), tis_cap) toward the sampler as behaviour policy."""
    if cfg.tis_cap is None:
        return logp_sampler_BL, None
    old_BL = logp_BL.detach()
    return old_BL, truncated_importance_weights(old_BL, logp_sampler_BL, cfg.tis_cap)


def optimizer_step(run: Run, cfg: OnPolicyConfig) -> tuple[float, float]:
    """Clip, step AdamW and the schedule; returns (grad norm, the lr this step used)."""
    grad_norm = torch.nn.utils.clip_grad_norm_(run.student.model.parameters(), cfg.grad_clip)
    run.optimizer.step()
    lr = run.scheduler.get_last_lr()[0]
    run.scheduler.step()
    run.state.step += 1
    run.state.global_step = run.state.step
    return float(grad_norm), lr


def end_step(
    run: Run,
    cfg: OnPolicyConfig,
    trajs: list[Trajectory],
    stats: StepStats,
    grad_norm: float,
    lr: float,
    extra_state: dict[str, Any] | None = None,
) -> None:
    """Log the step, evaluate when due, print one line and checkpoint when due."""
    step, metrics = run.state.step, run.student.metrics
    rec: dict[str, Any] = {
        "kind": "train",
        "step": step,
        "loss": stats.loss,
        "lr": lr,
        "grad_norm": grad_norm,
        "episodes": len(trajs),
        "episodes_total": step * cfg.episodes_per_step,
        "rollout_reward": sum(episode_reward(t, cfg.reward) for t in trajs) / len(trajs),
        "rollout_success": sum(t.success for t in trajs) / len(trajs),
        **stats.metrics,
    }
    metrics.log(rec)
    held = "-"
    last = step == cfg.steps
    if cfg.eval_episodes > 0 and (last or (cfg.eval_every and step % cfg.eval_every == 0)):
        out = run.run_dir / f"eval_step{step:05d}.jsonl"
        summary = student_lib.evaluate(run.student, cfg, out, seed=cfg.seed * 1_000_003 - 1)
        episodes_total = step * cfg.episodes_per_step
        metrics.log(
            {"kind": "eval", "iteration": step, "step": step, "episodes_total": episodes_total}
            | summary
        )
        held = f"{summary['success_rate']:.3f}"
    print(
        f"{step:>5} {stats.loss:>9.4f} {rec['rollout_reward']:>7.3f} "
        f"{rec['rollout_success']:>7.3f} {held:>8} {time.time() - run.t0:>5.0f}s",
        flush=True,
    )
    if last or (cfg.save_every and step % cfg.save_every == 0):
        run.state.extra = extra_state or {}
        s = run.student
        trainer.save_checkpoint(
            run.run_dir, s.model, s.tok, run.optimizer, run.scheduler, run.state, s.dist
        )


def finish(run: Run, cfg: OnPolicyConfig) -> Path:
    """Plot the curves and save the student to `RUN/final`; returns that path."""
    run.student.metrics.plot(run.run_dir / "curves.png")
    return student_lib.save_final(run.student, cfg, run.run_dir)


def saved_extra_state(run_dir: Path) -> dict[str, Any]:
    """The algorithm state saved with the latest checkpoint ({} when there is none)."""
    ckpt = trainer.latest_checkpoint(run_dir)
    return {} if ckpt is None else dict(trainer.read_run_state(ckpt).extra)


def dry_run_lines(cfg: OnPolicyConfig, name: str, teacher: str | None = None) -> list[str]:
    lines = student_lib.check_setup(cfg, teacher)
    lines.append(
        f"{name}: {cfg.steps} steps x {cfg.tasks_per_step} tasks x {cfg.group_size} episodes "
        f"= {cfg.steps * cfg.episodes_per_step} sampled episodes"
    )
    return lines
