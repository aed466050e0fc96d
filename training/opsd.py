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
through the teacher side. The teacher's weights are those of the initial student
(`teacher_weights: initial`, the default, as in the authors' scripts); `live` uses the
current student, which can collapse as teacher and student drift together.

Run: `mentorgym train configs/math_opsd.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mentorgym.agents.trajectory import Trajectory
from mentorgym.errors import ConfigError
from mentorgym.training import onpolicy, trainer
from mentorgym.training.config import OnPolicyConfig
from mentorgym.training.distributed import autocast
from mentorgym.training.opd import distill_loss, sampled_reverse_kl
from mentorgym.training.scoring import (
    frozen_copy,
    hidden_at,
    lm_head,
    logprobs_from_hidden,
    teacher_view,
)
from mentorgym.training.student import Student


@dataclass
class Config(OnPolicyConfig):
    loss: str = "jsd"
    """`jsd` (full-distribution GKD divergence) or `sampled` (lp_T - lp_S advantage)."""
    jsd_beta: float = 0.5
    """GKD beta: 0 forward KL(T||S), 1 reverse KL(S||T), between: JSD."""
    teacher_weights: str = "initial"
    """`initial`: a frozen copy of the starting student is the teacher (the authors' setup);
    `live`: the current student is the teacher."""
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


def opsd_loss(
    student: Student,
    cfg: Config,
    teacher: torch.nn.Module,
    notes: PrivilegedNotes,
    mb: onpolicy.MicroBatch,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher's privileged view of the micro-batch and OPD's loss toward it: (loss, the
    trainer's logprobs, the teacher's)."""
    b = mb.batch
    # the teacher sees the same tokens with privileged context
    lp_t_BL, t_hidden_BLH = teacher_view(
        teacher,
        student.tok,
        mb.trajs,
        mb.episodes,
        [notes(t) for t in mb.trajs],
        cfg,
        student.device,
        want_hidden=cfg.loss == "jsd",
    )
    hidden_BLH = hidden_at(student.model, b)
    logp_BL = logprobs_from_hidden(student.model, hidden_BLH, b.target_BL, cfg.rollout_temperature)
    weights = onpolicy.old_logprobs_and_weights(cfg, logp_BL, b.logp_old_BL)
    # No gradient flows through the teacher side, even when it is the live student.
    head_VH = lm_head(teacher).detach()
    loss = distill_loss(
        cfg, student.model, b, hidden_BLH, logp_BL, lp_t_BL, head_VH, t_hidden_BLH, weights
    )
    return loss, logp_BL, lp_t_BL


def train(cfg: Config, run_dir: Path, resume: bool) -> Path:
    """OPSD end to end; returns `RUN/final`."""
    run = onpolicy.start(cfg, run_dir, resume, "opsd")
    student = run.student
    # On resume `initial` copies the restored student: the run's start is not kept.
    teacher = student.model if cfg.teacher_weights == "live" else frozen_copy(student.model)
    notes = PrivilegedNotes(cfg)
    try:
        while run.state.step < cfg.steps:
            # 1. sample: the student sees only the task
            groups = onpolicy.sample(student, cfg, run.state.step)
            run.optimizer.zero_grad(set_to_none=True)
            stats = onpolicy.StepStats()
            parts = onpolicy.micro_batches(student, cfg, groups)
            for mb in parts:
                # 2. score and 3. loss toward the privileged view of the student's own tokens
                with autocast(student.device, cfg.precision):
                    loss, logp_BL, lp_t_BL = opsd_loss(student, cfg, teacher, notes, mb)
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
    finally:
        notes.env.close()
    return onpolicy.finish(run, cfg)


def dry_run(cfg: Config) -> list[str]:
    """Validate the config and check that the env gives privileged context; report lines."""
    name = f"opsd ({cfg.loss}, teacher weights {cfg.teacher_weights})"
    lines = onpolicy.dry_run_lines(cfg, name)
    notes = PrivilegedNotes(cfg)
    try:
        first = notes(Trajectory(cfg.env_id, seed=cfg.seed))
    finally:
        notes.env.close()
    lines.append("privileged context of the first training seed:\n" + first)
    return lines
