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

import torch

from mentorgym.errors import ConfigError
from mentorgym.training import onpolicy
from mentorgym.training.config import OnPolicyConfig
from mentorgym.training.losses import fused_linear_jsd, sampled_token_distill_loss
from mentorgym.training.scoring import (
    hidden_at,
    is_in_process,
    lm_head,
    load_teacher,
    logprobs_from_hidden,
    teacher_logprobs,
)
from mentorgym.training.trainer import autocast


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
        if self.loss == "jsd" and not is_in_process(self.teacher):
            raise ConfigError(
                f"loss: jsd needs the teacher's logits, so an in-process teacher (hf:PATH); "
                f"{self.teacher!r} can only score sampled tokens: set loss: sampled"
            )


def train(cfg: Config, run_dir: Path, resume: bool) -> Path:
    """OPD end to end; returns `RUN/final`."""
    run = onpolicy.start(cfg, run_dir, resume, "opd")
    student = run.student
    teacher = load_teacher(cfg.teacher, student.device, student.tok)
    where = "in process" if isinstance(teacher, torch.nn.Module) else "remote"
    print(f"teacher: {cfg.teacher} ({where}), loss: {cfg.loss}")
    while run.state.step < cfg.steps:
        # 1. sample: the student's own episodes (no env reward is used)
        trajs = [t for g in onpolicy.sample(student, cfg, run.state.step) for t in g]
        run.optimizer.zero_grad(set_to_none=True)
        stats = onpolicy.StepStats()
        parts = onpolicy.micro_batches(student, cfg, trajs)
        for mb in parts:
            b = mb.batch
            with autocast(student.device, cfg.precision):
                # 2. score: the teacher's logprobs of the student's sampled tokens
                lp_t_BL, t_hidden_BLH = teacher_logprobs(
                    teacher,
                    student.tok,
                    cfg,
                    [trajs[i] for i in mb.idx],
                    mb.episodes,
                    b,
                    student.device,
                    want_hidden=cfg.loss == "jsd",
                )
                # 3. loss: full-distribution JSD, or the sampled-token advantage lp_T - lp_S;
                # the ratio's pi_old and the truncated importance weights (`tis_cap`)
                hidden_BLH = hidden_at(student.model, b)
                logp_BL = logprobs_from_hidden(
                    student.model, hidden_BLH, b.target_BL, cfg.rollout_temperature
                )
                old_BL, tis_BL = onpolicy.behaviour(cfg, logp_BL, b.logp_old_BL)
                if cfg.loss == "jsd":
                    assert isinstance(teacher, torch.nn.Module) and t_hidden_BLH is not None
                    loss = fused_linear_jsd(
                        hidden_BLH,
                        lm_head(student.model),
                        t_hidden_BLH,
                        lm_head(teacher),
                        b.mask_BL,
                        cfg.jsd_beta,
                        cfg.rollout_temperature,
                        chunk_size=cfg.jsd_chunk,
                        weights_BT=tis_BL,
                    )
                else:
                    loss = sampled_token_distill_loss(
                        logp_BL,
                        b.logp_old_BL,
                        lp_t_BL,
                        b.mask_BL,
                        cfg.clip_eps or None,
                        logp_old_BT=old_BL,
                        weights_BT=tis_BL,
                    )
            (loss * mb.share).backward()
            # The reverse-KL estimate on the sampled tokens, logged in both modes.
            kl = ((b.logp_old_BL - lp_t_BL) * b.mask_BL).sum() / b.mask_BL.sum().clamp_min(1)
            stats.add(mb, loss, sampled_reverse_kl=float(kl))
            stats.add_sampler_gap(mb, logp_BL)
        stats.add_batches(parts)
        # 4. optimizer step
        grad_norm, lr = onpolicy.optimizer_step(run, cfg)
        # 5. log, evaluate, checkpoint
        onpolicy.end_step(run, cfg, trajs, stats, grad_norm, lr)
    return onpolicy.finish(run, cfg)


def dry_run(cfg: Config) -> list[str]:
    """Validate the config and check env and teacher spec; returns report lines."""
    return onpolicy.dry_run_lines(cfg, f"opd ({cfg.loss})", cfg.teacher)
