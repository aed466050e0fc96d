"""SOD: GRPO plus a turn-wise, divergence-reweighted distillation advantage.

The paper's "step" is one assistant turn of a multi-turn episode; here it is called a turn.
With lp_S the sampler's and lp_T the teacher's logprob of each sampled token, turn k's
divergence is d_k = mean_{t in k} |lp_S - lp_T| and its weight
w_k = min((d_1 + eps) / (d_k + eps), 1 + delta): turns that drifted far from the teacher
(where the teacher's signal is least reliable for the state the student reached) get less
of it. The token advantage is A_t = A_GRPO + c * w_k(t) * (lp_T - lp_S)
(`sod_advantages`), fed to the PPO-clipped loss (`clipped_pg_loss`). `pure_distill: true`
drops A_GRPO (pure on-policy distillation with turn reweighting).

Every weight is relative to the first turn's divergence d_1, so the loop logs it
(`first_turn_divergence`): when it is near zero, every later turn's weight collapses to
eps / d_k and the distillation term vanishes.

The teacher scores the student's tokens: `hf:PATH` in process or `openai:URL#MODEL`.
Formulas in docs/algorithms.md. Run: `mentorgym train configs/math_sod.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mentorgym.agents.base import Teacher
from mentorgym.errors import ConfigError
from mentorgym.training import onpolicy, trainer
from mentorgym.training.config import OnPolicyConfig
from mentorgym.training.distributed import autocast
from mentorgym.training.losses import clipped_pg_loss, sod_advantages, sod_step_weights
from mentorgym.training.scoring import (
    hidden_at,
    load_teacher,
    logprobs_from_hidden,
    teacher_logprobs,
)
from mentorgym.training.student import Student


@dataclass
class Config(OnPolicyConfig):
    teacher: str = "hf:runs/teacher/final"
    """The teacher: `hf:PATH` (in process) or `openai:URL#MODEL`."""
    distill_coef: float = 1.0
    """c: weight of the turn-weighted distillation advantage."""
    delta: float = 0.3
    """Cap on turn weights: w_k <= 1 + delta (the paper uses 0.2 to 0.5)."""
    eps: float = 1e-6
    """Stabilizer in the turn-weight ratio."""
    pure_distill: bool = False
    """Drop the GRPO term: distillation advantage only."""
    scale_advantages: bool = True
    """GRPO term: divide by the group's std (false only centers)."""
    clip_low: float = 0.2
    """PPO ratio clip below 1 (1 - clip_low)."""
    clip_high: float = 0.28
    """PPO ratio clip above 1 (1 + clip_high, DAPO's clip-higher)."""

    def validate(self) -> None:
        super().validate()
        if self.delta < 0 or self.eps <= 0:
            raise ConfigError("delta must be >= 0 and eps > 0")


def first_turn_divergence(
    logp_old_BL: torch.Tensor, lp_t_BL: torch.Tensor, turn_ids_BL: torch.Tensor
) -> float:
    """d_1 averaged over the batch's episodes: mean |lp_S - lp_T| on each first turn."""
    first_BL = (turn_ids_BL == 0).float()
    d1_B = ((logp_old_BL - lp_t_BL).abs() * first_BL).sum(1) / first_BL.sum(1).clamp_min(1)
    return float(d1_B.mean())


def sod_loss(
    student: Student, cfg: Config, teacher: torch.nn.Module | Teacher, mb: onpolicy.MicroBatch
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Score the micro-batch with the teacher and take SOD's loss: (loss, the trainer's
    logprobs, the turn-weight metrics)."""
    b = mb.batch
    # the teacher's logprobs of the sampled tokens
    lp_t_BL, _ = teacher_logprobs(
        teacher, student.tok, cfg, mb.trajs, mb.episodes, b, student.device
    )
    hidden_BLH = hidden_at(student.model, b)
    logp_BL = logprobs_from_hidden(student.model, hidden_BLH, b.target_BL, cfg.rollout_temperature)
    # token advantages A_GRPO + c * w_k * (lp_T - lp_S), PPO-clipped
    adv_B = None
    if not cfg.pure_distill:
        adv_B = torch.tensor(mb.advantages, device=logp_BL.device)
    turn_ids_BL = b.step_ids_BL.masked_fill(b.mask_BL == 0, -1)
    adv_BL = sod_advantages(
        adv_B, b.logp_old_BL, lp_t_BL, turn_ids_BL, cfg.distill_coef, cfg.eps, cfg.delta
    )
    old_BL, tis_BL = onpolicy.old_logprobs_and_weights(cfg, logp_BL, b.logp_old_BL)
    loss = clipped_pg_loss(
        logp_BL, old_BL, adv_BL, b.mask_BL, cfg.clip_low, cfg.clip_high, weights_BT=tis_BL
    )
    w_BL = sod_step_weights(b.logp_old_BL, lp_t_BL, turn_ids_BL, cfg.eps, cfg.delta)
    n = b.mask_BL.sum().clamp_min(1)
    metrics = {
        "turn_weight": float((w_BL * b.mask_BL).sum() / n),
        "first_turn_divergence": first_turn_divergence(b.logp_old_BL, lp_t_BL, turn_ids_BL),
        "sampled_reverse_kl": float(((b.logp_old_BL - lp_t_BL) * b.mask_BL).sum() / n),
    }
    return loss, logp_BL, metrics


def train(cfg: Config, run_dir: Path, resume: bool) -> Path:
    """SOD end to end; returns `RUN/final`."""
    run = onpolicy.start(cfg, run_dir, resume, "sod")
    student = run.student
    teacher = load_teacher(cfg.teacher, student.device, student.tok)
    mode = "pure distillation" if cfg.pure_distill else "GRPO + distillation"
    print(f"teacher: {cfg.teacher}; sod mode: {mode}")
    while run.state.step < cfg.steps:
        # 1. sample groups; GRPO advantages from their rewards
        groups = onpolicy.sample(student, cfg, run.state.step)
        onpolicy.set_grpo_advantages(groups, cfg.scale_advantages)
        run.optimizer.zero_grad(set_to_none=True)
        stats = onpolicy.StepStats()
        parts = onpolicy.micro_batches(student, cfg, groups)
        for mb in parts:
            # 2. score: the teacher's logprobs; 3. loss: turn-weighted advantages, PPO-clipped
            with autocast(student.device, cfg.precision):
                loss, logp_BL, metrics = sod_loss(student, cfg, teacher, mb)
            (loss * mb.share).backward()
            stats.add_sampler_gap(mb, logp_BL)
            stats.add(mb, loss, **metrics)
        stats.add_batches(parts)
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
    """Validate the config and check env and teacher spec; returns report lines."""
    name = "sod" + (" (pure distillation)" if cfg.pure_distill else "")
    return onpolicy.dry_run_lines(cfg, name, cfg.teacher)
