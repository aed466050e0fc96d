"""OPSD: on-policy self-distillation with privileged context.

The student sees only the task; the teacher is the student itself (the same weights, or a
frozen copy of the initial student) given privileged context in its system prompt: the
reference solution (math: the solving program, the worked steps and the answer) or the
expert's plan (Sokoban: the optimal move sequence from the start). The student samples
on-policy and is trained toward the privileged view of its own tokens, by GKD's
generalized JSD over the full distribution (`loss: jsd`, `fused_linear_jsd`) or by the
sampled-token advantage lp_T - lp_S (`loss: sampled`). This is the objective of
"Self-Distilled Reasoner: On-Policy Self-Distillation for LLMs" (Zhao et al., 2026):
the same model as teacher and student, the teacher conditioned on the ground-truth
solution, a per-token divergence on the student's own rollouts; no gradient flows
through the teacher side.

Run: `mentorgym train configs/math_opsd.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mentorgym.agents.trajectory import Trajectory
from mentorgym.errors import ConfigError
from mentorgym.training import onpolicy as O
from mentorgym.training.losses import fused_linear_jsd, sampled_token_distill_loss


@dataclass
class Config(O.OnPolicyConfig):
    loss: str = "jsd"
    """`jsd` (full-distribution GKD divergence) or `sampled` (lp_T - lp_S advantage)."""
    jsd_beta: float = 0.5
    """GKD beta: 0 forward KL(T||S), 1 reverse KL(S||T), between: JSD."""
    teacher_weights: str = "live"
    """`live`: the current student is the teacher; `initial`: a frozen copy of the start."""
    clip_eps: float = 0.2
    """PPO clip of the ratio in the sampled loss (0: no clipping)."""
    max_plan_moves: int = 200
    """Longest expert plan written into the privileged context."""

    def validate(self) -> None:
        super().validate()
        if self.loss not in ("jsd", "sampled"):
            raise ConfigError(f"loss {self.loss!r}: use jsd or sampled")
        if self.teacher_weights not in ("live", "initial"):
            raise ConfigError(f"teacher_weights {self.teacher_weights!r}: use live or initial")
        if not 0.0 <= self.jsd_beta <= 1.0:
            raise ConfigError(f"jsd_beta must be in [0, 1], got {self.jsd_beta}")


def privileged_context(env: Any, seed: int | None, max_moves: int) -> str:
    """What the teacher may know about the episode of `seed`: the reference solution where the
    env offers one, else the expert's whole plan from the start. Raises ConfigError if neither."""
    env.reset(seed=seed)
    inner = env.unwrapped
    ref = getattr(inner, "reference_solution", None)
    if callable(ref) and (text := ref()):
        return "Privileged reference solution (the student does not see this):\n" + text
    expert = getattr(inner, "expert_action", None)
    if not callable(expert):
        raise ConfigError(
            f"{env.spec.id if env.spec else env} offers neither reference_solution() nor "
            "expert_action(); OPSD needs privileged context"
        )
    plan: list[str] = []
    for _ in range(max_moves):
        action = expert()
        if action is None:
            break
        plan.append(action)
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    return "Privileged expert plan from the start (the student does not see this):\n" + " ".join(
        plan
    )


class PrivilegedNotes:
    """Privileged context per env seed, computed once per seed from a fresh env."""

    def __init__(self, cfg: Config):
        from mentorgym import make

        self.env = make(cfg.env_id, **cfg.env_kwargs)
        self.max_moves = cfg.max_plan_moves
        self.cache: dict[int | None, str] = {}

    def __call__(self, traj: Trajectory) -> str:
        if traj.seed not in self.cache:
            self.cache[traj.seed] = privileged_context(self.env, traj.seed, self.max_moves)
        return self.cache[traj.seed]


def train(cfg: Config, run_dir: Path, resume: bool) -> Path:
    """OPSD end to end; returns `RUN/final`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    s = O.setup(cfg, run_dir)
    teacher = s.model if cfg.teacher_weights == "live" else O.frozen_copy(s.model)
    notes = PrivilegedNotes(cfg)

    def loss_fn(step: int, groups: list[list[Trajectory]]) -> tuple[float, dict[str, float]]:
        trajs = [t for g in groups for t in g]

        def micro(
            idx: list[int], eps: list[O.Episode], b: O.Batch
        ) -> tuple[torch.Tensor, dict[str, float]]:
            sub = [trajs[i] for i in idx]
            lp_t_BL, t_hidden_BLH = O.teacher_view(
                teacher, s.tok, sub, eps, [notes(t) for t in sub], cfg, s.device, cfg.loss == "jsd"
            )
            hidden_BLH = O.hidden_at(s.model, b)
            n = b.mask_BL.sum().clamp_min(1)
            kl = float(((b.logp_old_BL - lp_t_BL) * b.mask_BL).sum() / n)
            if cfg.loss == "jsd":
                assert t_hidden_BLH is not None
                loss = fused_linear_jsd(
                    hidden_BLH,
                    O.lm_head(s.model),
                    t_hidden_BLH,
                    O.lm_head(teacher).detach(),
                    b.mask_BL,
                    cfg.jsd_beta,
                    cfg.rollout_temperature,
                )
            else:
                logp_BL = O.logprobs_from_hidden(
                    s.model, hidden_BLH, b.target_BL, cfg.rollout_temperature
                )
                loss = sampled_token_distill_loss(
                    logp_BL, b.logp_old_BL, lp_t_BL, b.mask_BL, cfg.clip_eps or None
                )
            return loss, {"sampled_reverse_kl": kl}

        return O.accumulate(s, cfg, trajs, micro)

    try:
        return O.train_loop(cfg, run_dir, resume, s, "opsd", loss_fn)
    finally:
        notes.env.close()


def dry_run(cfg: Config) -> list[str]:
    """Validate the config and check that the env gives privileged context; report lines."""
    lines = O.dry_run_lines(cfg, f"opsd ({cfg.loss}, teacher weights {cfg.teacher_weights})")
    notes = PrivilegedNotes(cfg)
    try:
        lines.append(
            "privileged context of the first training seed:\n"
            + notes(Trajectory(cfg.env_id, seed=cfg.seed))
        )
    finally:
        notes.env.close()
    return lines
