"""On-policy distillation (OPD): the student samples, the teacher scores the same tokens.

Objectives (also in docs/algorithms.md):
- `loss: jsd`: GKD's generalized Jensen-Shannon divergence over the full vocabulary at every
  sampled position (Agarwal et al., 2024, "On-Policy Distillation of Language Models"),
  beta in [0, 1] (0 forward KL, 1 reverse KL). Needs the teacher's logits, so the teacher
  runs in process (`hf:PATH`); computed by `fused_linear_jsd` from the student's and the
  teacher's hidden states and LM heads, chunked, never holding B x T x V logits.
- `loss: sampled`: the per-token advantage A_t = lp_T - lp_S on the sampled tokens only,
  loss -mean ratio_t * A_t (Thinking Machines, "On-Policy Distillation", 2025; GKD's
  sampled form), PPO-clipped by `clip_eps`. Works with any teacher that can `score`: in
  process (`hf:PATH`) or remote (`openai:URL#MODEL`, a vLLM or `mentorgym serve-model`
  endpoint, through prompt_logprobs).

No environment reward is used: the teacher's judgement of each token is the signal.
Teacher and student must share a tokenizer (the teacher scores the student's own ids).

Run: `mentorgym train configs/sokoban_opd.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from mentorgym.agents.base import Teacher
from mentorgym.agents.spec import parse_agent_spec
from mentorgym.errors import ConfigError
from mentorgym.training import onpolicy, trainer
from mentorgym.training.config import OnPolicyConfig
from mentorgym.training.data import Batch
from mentorgym.training.distributed import autocast
from mentorgym.training.losses import fused_linear_jsd, sampled_token_distill_loss
from mentorgym.training.scoring import (
    hidden_at,
    lm_head,
    load_teacher,
    logprobs_from_hidden,
    teacher_logprobs,
)
from mentorgym.training.student import Student


@dataclass
class Config(OnPolicyConfig):
    teacher: str = "hf:runs/teacher/final"
    """The teacher: `hf:PATH` (in process) or `openai:URL#MODEL` (sampled loss only)."""
    loss: str = "sampled"
    """`sampled` (per-token lp_T - lp_S advantage) or `jsd` (full-distribution GKD)."""
    jsd_beta: float = 1.0
    """GKD beta for `loss: jsd`: 0 forward KL(T||S), 1 reverse KL(S||T), between: JSD."""
    clip_eps: float = 0.2
    """PPO clip of the ratio in the sampled loss (0: no clipping)."""
    jsd_chunk: int = 256
    """Tokens per chunk in the fused JSD (memory knob)."""

    def validate(self) -> None:
        super().validate()
        if self.loss not in ("sampled", "jsd"):
            raise ConfigError(f"loss {self.loss!r}: use sampled or jsd")
        if not 0.0 <= self.jsd_beta <= 1.0:
            raise ConfigError(f"jsd_beta must be in [0, 1], got {self.jsd_beta}")
        if self.loss == "jsd" and not parse_agent_spec(self.teacher).weights:
            raise ConfigError(
                f"loss: jsd needs the teacher's logits, so an in-process teacher (hf:PATH); "
                f"{self.teacher!r} can only score sampled tokens: set loss: sampled"
            )


class DistillSettings(Protocol):
    """The fields `distill_loss` reads (OPD's and OPSD's configs have them)."""

    loss: str
    jsd_beta: float
    clip_eps: float
    rollout_temperature: float


def distill_loss(
    cfg: DistillSettings,
    student_model: torch.nn.Module,
    b: Batch,
    hidden_BLH: torch.Tensor,
    logp_BL: torch.Tensor,
    lp_t_BL: torch.Tensor,
    teacher_head_VH: torch.Tensor | None,
    t_hidden_BLH: torch.Tensor | None,
    weights: tuple[torch.Tensor, torch.Tensor | None],
    jsd_chunk: int | None = None,
) -> torch.Tensor:
    """OPD's loss of one micro-batch: GKD's JSD over the full distribution from the student's
    and the teacher's hidden states and heads (`loss: jsd`), or the PPO-clipped sampled-token
    advantage lp_T - lp_S (`loss: sampled`). `weights`: the ratio's old logprobs and the
    truncated importance weights (`onpolicy.old_logprobs_and_weights`)."""
    old_BL, tis_BL = weights
    if cfg.loss == "jsd":
        assert teacher_head_VH is not None and t_hidden_BLH is not None
        return fused_linear_jsd(
            hidden_BLH,
            lm_head(student_model),
            t_hidden_BLH,
            teacher_head_VH,
            b.mask_BL,
            cfg.jsd_beta,
            cfg.rollout_temperature,
            chunk_size=jsd_chunk,
            weights_BT=tis_BL,
        )
    return sampled_token_distill_loss(
        logp_BL,
        b.logp_old_BL,
        lp_t_BL,
        b.mask_BL,
        cfg.clip_eps or None,
        logp_old_BT=old_BL,
        weights_BT=tis_BL,
    )


def sampled_reverse_kl(b: Batch, lp_t_BL: torch.Tensor) -> float:
    """The reverse-KL estimate on the sampled tokens: mean lp_S - lp_T (logged in both modes)."""
    return float(((b.logp_old_BL - lp_t_BL) * b.mask_BL).sum() / b.mask_BL.sum().clamp_min(1))


def opd_loss(
    student: Student, cfg: Config, teacher: torch.nn.Module | Teacher, mb: onpolicy.MicroBatch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score the micro-batch with the teacher and take OPD's loss: (loss, the trainer's
    logprobs, the teacher's)."""
    b = mb.batch
    # the teacher's logprobs of the student's sampled tokens
    lp_t_BL, t_hidden_BLH = teacher_logprobs(
        teacher,
        student.tok,
        cfg,
        mb.trajs,
        mb.episodes,
        b,
        student.device,
        want_hidden=cfg.loss == "jsd",
    )
    hidden_BLH = hidden_at(student.model, b)
    logp_BL = logprobs_from_hidden(student.model, hidden_BLH, b.target_BL, cfg.rollout_temperature)
    weights = onpolicy.old_logprobs_and_weights(cfg, logp_BL, b.logp_old_BL)
    head_VH = lm_head(teacher) if isinstance(teacher, torch.nn.Module) else None
    loss = distill_loss(
        cfg, student.model, b, hidden_BLH, logp_BL, lp_t_BL, head_VH, t_hidden_BLH, weights,
        jsd_chunk=cfg.jsd_chunk,
    )  # fmt: skip
    return loss, logp_BL, lp_t_BL


def train(cfg: Config, run_dir: Path, resume: bool) -> Path:
    """OPD end to end; returns `RUN/final`."""
    run = onpolicy.start(cfg, run_dir, resume, "opd")
    student = run.student
    teacher = load_teacher(cfg.teacher, student.device, student.tok)
    where = "in process" if isinstance(teacher, torch.nn.Module) else "remote"
    print(f"teacher: {cfg.teacher} ({where}), loss: {cfg.loss}")
    while run.state.step < cfg.steps:
        # 1. sample: the student's own episodes (no env reward is used)
        groups = onpolicy.sample(student, cfg, run.state.step)
        run.optimizer.zero_grad(set_to_none=True)
        stats = onpolicy.StepStats()
        parts = onpolicy.micro_batches(student, cfg, groups)
        for mb in parts:
            # 2. score and 3. loss: the teacher's logprobs of the student's tokens; JSD or
            # the sampled-token advantage lp_T - lp_S
            with autocast(student.device, cfg.precision):
                loss, logp_BL, lp_t_BL = opd_loss(student, cfg, teacher, mb)
            (loss * mb.share).backward()
            stats.add(mb, loss, sampled_reverse_kl=sampled_reverse_kl(mb.batch, lp_t_BL))
            stats.add_sampler_gap(mb, logp_BL)
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
    return onpolicy.dry_run_lines(cfg, f"opd ({cfg.loss})", cfg.teacher)
