"""SOD: GRPO plus a step-wise, divergence-reweighted distillation advantage.

A step is one contiguous run of assistant tokens (one turn of a multi-turn episode). With
lp_S the sampler's and lp_T the teacher's logprob of each sampled token, step k's
divergence is d_k = mean_{t in k} |lp_S - lp_T| and its weight
w_k = min((d_1 + eps) / (d_k + eps), 1 + delta): steps that drifted far from the teacher
(where the teacher's signal is least reliable for the state the student reached) get less
of it. The token advantage is A_t = A_GRPO + c * w_k(t) * (lp_T - lp_S)
(`sod_advantages`), fed to the PPO-clipped loss (`clipped_pg_loss`). `pure_distill: true`
drops A_GRPO (pure on-policy distillation with step reweighting).
Objective as in DESIGN.md "Algorithms" (SOD: step-wise on-policy distillation with
divergence reweighting for multi-turn agents).

The teacher scores the student's tokens: `hf:PATH` in process or `openai:URL#MODEL`.

Run: `mentorgym train configs/math_sod.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mentorgym.agents.trajectory import Trajectory
from mentorgym.errors import ConfigError
from mentorgym.training import grpo
from mentorgym.training import onpolicy as O
from mentorgym.training.losses import clipped_pg_loss, sod_advantages, sod_step_weights
from mentorgym.training.opd import load_teacher, teacher_logprobs


@dataclass
class Config(O.OnPolicyConfig):
    teacher: str = "hf:runs/teacher/final"
    """The teacher: `hf:PATH` (in process) or `openai:URL#MODEL`."""
    distill_coef: float = 1.0
    """c: weight of the step-weighted distillation advantage."""
    delta: float = 0.3
    """Cap on step weights: w_k <= 1 + delta (the paper uses 0.2 to 0.5)."""
    eps: float = 1e-6
    """Stabilizer in the step-weight ratio."""
    pure_distill: bool = False
    """Drop the GRPO term: distillation advantage only."""
    scale_advantages: bool = True
    """GRPO term: divide by the group's std (false only centers)."""

    def validate(self) -> None:
        super().validate()
        if self.delta < 0 or self.eps <= 0:
            raise ConfigError("delta must be >= 0 and eps > 0")


def train(cfg: Config, run_dir: Path, resume: bool) -> Path:
    """SOD end to end; returns `RUN/final`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    s = O.setup(cfg, run_dir)
    teacher = load_teacher(cfg.teacher, s)
    mode = "pure distillation" if cfg.pure_distill else "GRPO + distillation"
    print(f"teacher: {cfg.teacher}; sod mode: {mode}")

    def loss_fn(step: int, groups: list[list[Trajectory]]) -> tuple[float, dict[str, float]]:
        trajs = [t for g in groups for t in g]
        adv = grpo.group_advantages(groups, cfg.reward, cfg.scale_advantages)

        def micro(
            idx: list[int], eps: list[O.Episode], b: O.Batch
        ) -> tuple[torch.Tensor, dict[str, float]]:
            lp_t_BL, _ = teacher_logprobs(teacher, s, cfg, [trajs[i] for i in idx], eps, b)
            hidden_BLH = O.hidden_at(s.model, b)
            logp_BL = O.logprobs_from_hidden(
                s.model, hidden_BLH, b.target_BL, cfg.rollout_temperature
            )
            adv_B = (
                None
                if cfg.pure_distill
                else torch.tensor([adv[i] for i in idx], device=logp_BL.device)
            )
            step_ids_BL = b.step_ids_BL.masked_fill(b.mask_BL == 0, -1)
            adv_BL = sod_advantages(
                adv_B, b.logp_old_BL, lp_t_BL, step_ids_BL, cfg.distill_coef, cfg.eps, cfg.delta
            )
            loss = clipped_pg_loss(
                logp_BL, b.logp_old_BL, adv_BL, b.mask_BL, cfg.clip_low, cfg.clip_high
            )
            w_BL = sod_step_weights(b.logp_old_BL, lp_t_BL, step_ids_BL, cfg.eps, cfg.delta)
            n = b.mask_BL.sum().clamp_min(1)
            return loss, {
                "step_weight": float((w_BL * b.mask_BL).sum() / n),
                "sampled_reverse_kl": float(((b.logp_old_BL - lp_t_BL) * b.mask_BL).sum() / n),
            }

        return O.accumulate(s, cfg, trajs, micro)

    return O.train_loop(cfg, run_dir, resume, s, "sod", loss_fn)


def dry_run(cfg: Config) -> list[str]:
    """Validate the config and check env and teacher spec; returns report lines."""
    return O.dry_run_lines(cfg, "sod" + (" (pure distillation)" if cfg.pure_distill else ""))
