"""GRPO: the sparse-reward baseline (Shao et al., 2024, "DeepSeekMath", group relative policy
optimization; DAPO's clip-higher ranges).

Each step samples `group_size` episodes of each of `tasks_per_step` tasks (the same env
seed within a group), turns each episode's reward R into the group-normalized advantage
`(R - mean_g) / (std_g + eps)` (`grpo_advantages`), and takes one AdamW step on the
clipped ratio loss `-min(r A, clip(r, 1 - e_lo, 1 + e_hi) A)` over every sampled
assistant token of the episode (`clipped_pg_loss`; r = pi_theta / pi_sampler). A group
whose members all got the same reward has zero advantage and teaches nothing.

Run: `mentorgym train configs/math_grpo.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mentorgym.training import onpolicy, trainer
from mentorgym.training.config import OnPolicyConfig
from mentorgym.training.distributed import autocast
from mentorgym.training.losses import clipped_pg_loss
from mentorgym.training.scoring import hidden_at, logprobs_from_hidden
from mentorgym.training.student import Student


@dataclass
class Config(OnPolicyConfig):
    clip_low: float = 0.2
    """PPO ratio clip below 1 (1 - clip_low)."""
    clip_high: float = 0.28
    """PPO ratio clip above 1 (1 + clip_high, DAPO's clip-higher)."""
    scale_advantages: bool = True
    """Divide by the group's std (GRPO); false only centers (Dr. GRPO)."""


def ratio_deviation(
    logp_BL: torch.Tensor, logp_old_BL: torch.Tensor, mask_BL: torch.Tensor
) -> float:
    """Mean |pi_theta / pi_sampler - 1| over loss tokens: ~0 when sampling and training agree."""
    dev_BL = (logp_BL.detach() - logp_old_BL).exp().sub(1).abs()
    return float((dev_BL * mask_BL).sum() / mask_BL.sum().clamp_min(1))


def zero_advantage_groups(groups: list[onpolicy.TrajectoryGroup]) -> int:
    """Groups whose members all have the same advantage (they teach nothing)."""
    return sum(len({round(x, 9) for x in g.advantages}) == 1 for g in groups)


def grpo_loss(
    student: Student, cfg: Config, mb: onpolicy.MicroBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped ratio loss of one micro-batch (token mean), and the trainer's logprobs."""
    b = mb.batch
    hidden_BLH = hidden_at(student.model, b)
    logp_BL = logprobs_from_hidden(student.model, hidden_BLH, b.target_BL, cfg.rollout_temperature)
    adv_B = torch.tensor(mb.advantages, device=logp_BL.device)
    old_BL, tis_BL = onpolicy.old_logprobs_and_weights(cfg, logp_BL, b.logp_old_BL)
    loss = clipped_pg_loss(
        logp_BL, old_BL, adv_B, b.mask_BL, cfg.clip_low, cfg.clip_high, weights_BT=tis_BL
    )
    return loss, logp_BL


def train(cfg: Config, run_dir: Path, resume: bool) -> Path:
    """GRPO end to end; returns `RUN/final`."""
    run = onpolicy.start(cfg, run_dir, resume, "grpo")
    student = run.student
    while run.state.step < cfg.steps:
        # 1. sample: groups of episodes per task, from the current student
        groups = onpolicy.sample(student, cfg, run.state.step)
        # 2. score: one group-relative advantage per episode
        onpolicy.set_grpo_advantages(groups, cfg.scale_advantages)
        # 3. loss and backward, micro-batch by micro-batch (token mean over the step)
        run.optimizer.zero_grad(set_to_none=True)
        stats = onpolicy.StepStats()
        parts = onpolicy.micro_batches(student, cfg, groups)
        for mb in parts:
            b = mb.batch
            with autocast(student.device, cfg.precision):
                loss, logp_BL = grpo_loss(student, cfg, mb)
            (loss * mb.share).backward()
            stats.add_sampler_gap(mb, logp_BL)
            stats.add(mb, loss, ratio_dev=ratio_deviation(logp_BL, b.logp_old_BL, b.mask_BL))
        stats.add_batches(parts)
        stats.metrics["zero_adv_groups"] = float(zero_advantage_groups(groups))
        # 4. optimizer step
        grad_norm, lr = trainer.optimizer_step(
            student.model, run.optimizer, run.scheduler, cfg.grad_clip
        )
        run.state.step += 1
        run.state.global_step = run.state.step
        # 5. log, evaluate, checkpoint
        rec = onpolicy.log_step(run, cfg, groups, stats, grad_norm, lr)
        onpolicy.print_step(run, rec, onpolicy.evaluate_if_due(run, cfg))
        onpolicy.checkpoint_if_due(run, cfg)
    return onpolicy.finish(run, cfg)


def dry_run(cfg: Config) -> list[str]:
    """Validate the config and check the env; returns report lines."""
    return onpolicy.dry_run_lines(cfg, "grpo")
