"""Skill-SD: GRPO plus self-distillation from a skill-conditioned copy of the student.

Finished trajectories are summarized into skills (`training/skills.py`), JSON objects with `success_analysis`,
`mistake_analysis` and `golden_workflow`: what worked, what failed and the workflow, in
words that transfer to other tasks of the env (no move list of one room, no answer of one
problem). The summarizer is an LLM behind the Policy contract (`summarizer: hf:PATH` /
`openai:URL#MODEL` / ...; output that is not valid JSON is counted and skipped) or the
env's own rule-based hook (`summarizer: rule`, `TextEnv.summarize_for_skill`: a generic
default, with Sokoban and math saying what a good turn is).

Skills go into a bounded buffer. Every step each group of episodes (one task) takes a skill
chosen by UCB1 over the skills' usefulness, the picks of one step counted as pending pulls
so that the groups of a step spread over the arms; every arm used is updated after the step.
The teacher is the student's own copy, re-synced every `sync_every` steps, prompted with
the skill plus the task; it re-scores the student's sampled tokens. With l_t = lp_S - lp_T
and rho_t = pi_theta / sg(pi_old):

    L_SD = mean_t rho_t * (exp(-l_t) - 1 + l_t)      (`skill_sd_loss`)
    L    = L_GRPO + lambda * L_SD                    (lambda ~ 1e-3)

as in "Skill-SD: skill-conditioned self-distillation for LLM agents" (docs/algorithms.md).

A skill's usefulness, the bandit's reward: for each episode it conditioned, the episode's
GRPO advantage times the teacher's mean log-likelihood gain over the student on that
episode, A_b * mean_t(lp_T - lp_S). It is positive when the skill makes the teacher more
confident on episodes that went better than their group and less on those that went
worse, i.e. when the skill separates good behaviour from bad.

What the skills do is measured each step: `skill_logprob_gain`, the teacher's mean logprob
of the successful episodes' tokens with their skill minus without it.

Run: `mentorgym train configs/sokoban_skill_sd.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mentorgym.errors import ConfigError
from mentorgym.training import onpolicy, trainer
from mentorgym.training.config import OnPolicyConfig
from mentorgym.training.distributed import autocast
from mentorgym.training.losses import clipped_pg_loss, skill_sd_loss
from mentorgym.training.scoring import frozen_copy, hidden_at, logprobs_from_hidden, teacher_view
from mentorgym.training.skills import (
    RuleSummarizer,
    Skill,
    SkillBuffer,
    add_skills,
    make_summarizer,
)
from mentorgym.training.student import Student

# --- training --------------------------------------------------------------------------------------


@dataclass
class Config(OnPolicyConfig):
    summarizer: str = "rule"
    """`rule` (the env's own summary hook) or an agent spec of an LLM summarizer."""
    sd_coef: float = 1e-3
    """lambda in L = L_GRPO + lambda * L_SD."""
    sync_every: int = 10
    """Re-sync the teacher copy with the student every K steps."""
    buffer_size: int = 32
    """Skills kept in the buffer."""
    ucb_c: float = 1.0
    """Exploration constant of the UCB skill selection."""
    summaries_per_step: int = 2
    """Finished episodes summarized into new skills per step (successes first)."""
    scale_advantages: bool = True
    """GRPO term: divide by the group's std (false only centers)."""
    clip_low: float = 0.2
    """PPO ratio clip below 1 (1 - clip_low)."""
    clip_high: float = 0.28
    """PPO ratio clip above 1 (1 + clip_high, DAPO's clip-higher)."""

    def validate(self) -> None:
        super().validate()
        if self.sync_every <= 0 or self.buffer_size <= 0 or self.summaries_per_step < 0:
            raise ConfigError("sync_every and buffer_size must be > 0, summaries_per_step >= 0")


def skill_logprob_gain(
    teacher: torch.nn.Module,
    student: Student,
    cfg: Config,
    mb: onpolicy.MicroBatch,
    lp_skill_BL: torch.Tensor,
    has_B: torch.Tensor,
) -> tuple[float, float]:
    """(sum, count) over the tokens of the micro-batch's successful episodes that had a skill,
    of the teacher's logprob with the skill minus without it."""
    success_B = torch.tensor([t.success for t in mb.trajs], device=has_B.device)
    keep_BL = (has_B & success_B)[:, None] * mb.batch.mask_BL
    if not bool(keep_BL.any()):
        return 0.0, 0.0
    lp_plain_BL, _ = teacher_view(
        teacher, student.tok, mb.trajs, mb.episodes, [None] * len(mb.trajs), cfg, student.device
    )
    return float(((lp_skill_BL - lp_plain_BL) * keep_BL).sum()), float(keep_BL.sum())


def bandit_rewards(
    skills: list[Skill | None],
    adv_B: torch.Tensor,
    lp_t_BL: torch.Tensor,
    logp_old_BL: torch.Tensor,
    mask_BL: torch.Tensor,
) -> list[tuple[Skill, float]]:
    """The bandit's reward of each episode that had a skill: A_b times the teacher's mean
    logprob gain over the sampler on that episode."""
    gain_B = ((lp_t_BL - logp_old_BL) * mask_BL).sum(1) / mask_BL.sum(1).clamp_min(1)
    return [
        (sk, float(adv_B[j]) * float(gain_B[j])) for j, sk in enumerate(skills) if sk is not None
    ]


@dataclass
class SkillStep:
    """What a step's micro-batches tell the skill buffer: each used skill's bandit reward, and
    the teacher's logprob gain from the skills on successful episodes (sum, token count)."""

    bandit: list[tuple[Skill, float]] = field(default_factory=list)
    gain_sum: float = 0.0
    gain_n: float = 0.0


def skill_sd_micro_batch(
    student: Student,
    cfg: Config,
    teacher: torch.nn.Module,
    mb: onpolicy.MicroBatch,
    skills: list[Skill | None],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """L_GRPO + lambda * L_SD of one micro-batch: (loss, L_SD, the trainer's logprobs, the
    skill-conditioned teacher's logprobs (None when no episode had a skill))."""
    b = mb.batch
    hidden_BLH = hidden_at(student.model, b)
    logp_BL = logprobs_from_hidden(student.model, hidden_BLH, b.target_BL, cfg.rollout_temperature)
    adv_B = torch.tensor(mb.advantages, device=logp_BL.device)
    old_BL, tis_BL = onpolicy.old_logprobs_and_weights(cfg, logp_BL, b.logp_old_BL)
    loss = clipped_pg_loss(
        logp_BL, old_BL, adv_B, b.mask_BL, cfg.clip_low, cfg.clip_high, weights_BT=tis_BL
    )
    has_B = torch.tensor([sk is not None for sk in skills], device=logp_BL.device)
    if not bool(has_B.any()):
        return loss, torch.zeros(()), logp_BL, None
    # the skill-conditioned teacher copy re-scores the sampled tokens
    notes = [sk.text() if sk is not None else None for sk in skills]
    lp_t_BL, _ = teacher_view(
        teacher, student.tok, mb.trajs, mb.episodes, notes, cfg, student.device
    )
    has_BL = has_B[:, None] * b.mask_BL
    loss_sd = skill_sd_loss(logp_BL, old_BL, lp_t_BL, has_BL, weights_BT=tis_BL)
    return loss + cfg.sd_coef * loss_sd, loss_sd, logp_BL, lp_t_BL


def train(cfg: Config, run_dir: Path, resume: bool) -> Path:
    """Skill-SD end to end; returns `RUN/final`."""
    run = onpolicy.start(cfg, run_dir, resume, "skill_sd")
    student = run.student
    summarizer = make_summarizer(cfg.summarizer, cfg.env_id, cfg.env_kwargs)
    buffer = SkillBuffer(cfg.buffer_size, cfg.ucb_c)
    if resume:
        buffer.load_json(onpolicy.saved_extra_state(run_dir).get("skills", []))
    # On resume the copy is re-synced from the restored student (the state at the last sync
    # is not kept): the teacher may be a few steps newer than in an uninterrupted run.
    teacher = frozen_copy(student.model)
    while run.state.step < cfg.steps:
        # 1. sample groups; GRPO advantages; one skill per group (a group is one task)
        groups = onpolicy.sample(student, cfg, run.state.step)
        onpolicy.set_grpo_advantages(groups, cfg.scale_advantages)
        chosen = buffer.select(len(groups))
        run.optimizer.zero_grad(set_to_none=True)
        stats, seen = onpolicy.StepStats(), SkillStep()
        parts = onpolicy.micro_batches(student, cfg, groups)
        for mb in parts:
            skills = [chosen[g] for g in mb.group_ids]
            # 2. score: the skill-conditioned teacher; 3. loss: L_GRPO + lambda * L_SD
            with autocast(student.device, cfg.precision):
                loss, loss_sd, logp_BL, lp_t_BL = skill_sd_micro_batch(
                    student, cfg, teacher, mb, skills
                )
            (loss * mb.share).backward()
            stats.add(mb, loss, loss_sd=float(loss_sd.detach()))
            stats.add_sampler_gap(mb, logp_BL)
            if lp_t_BL is not None:
                record_skill_effects(seen, student, cfg, teacher, mb, skills, lp_t_BL)
        stats.add_batches(parts)
        # 4. optimizer step; the teacher copy follows every `sync_every` steps
        grad_norm, lr = trainer.optimizer_step(
            student.model, run.optimizer, run.scheduler, cfg.grad_clip
        )
        run.state.step += 1
        run.state.global_step = run.state.step
        if run.state.step % cfg.sync_every == 0:
            teacher = frozen_copy(student.model)
        # 5. the skill buffer: every arm used this step is updated, new skills are added
        stats.metrics.update(update_buffer(buffer, summarizer, groups, seen, cfg))
        # 6. log, evaluate, checkpoint (with the buffer)
        rec = onpolicy.log_step(run, cfg, groups, stats, grad_norm, lr)
        onpolicy.print_step(run, rec, onpolicy.evaluate_if_due(run, cfg))
        onpolicy.checkpoint_if_due(run, cfg, {"skills": buffer.to_json()})
    if isinstance(summarizer, RuleSummarizer):
        summarizer.close()
    return onpolicy.finish(run, cfg)


def record_skill_effects(
    seen: SkillStep,
    student: Student,
    cfg: Config,
    teacher: torch.nn.Module,
    mb: onpolicy.MicroBatch,
    skills: list[Skill | None],
    lp_t_BL: torch.Tensor,
) -> None:
    """Add the micro-batch's bandit rewards and skill logprob gain to `seen`."""
    b = mb.batch
    adv_B = torch.tensor(mb.advantages, device=lp_t_BL.device)
    has_B = torch.tensor([sk is not None for sk in skills], device=lp_t_BL.device)
    seen.bandit += bandit_rewards(skills, adv_B, lp_t_BL, b.logp_old_BL, b.mask_BL)
    s_, n_ = skill_logprob_gain(teacher, student, cfg, mb, lp_t_BL, has_B)
    seen.gain_sum, seen.gain_n = seen.gain_sum + s_, seen.gain_n + n_


def update_buffer(
    buffer: SkillBuffer,
    summarizer: Any,
    groups: list[onpolicy.TrajectoryGroup],
    seen: SkillStep,
    cfg: Config,
) -> dict[str, float]:
    """Update every arm used this step, add the step's new skills; returns the skill metrics."""
    for sk, value in seen.bandit:
        buffer.update(sk, value)
    added = add_skills(buffer, summarizer, onpolicy.episodes_of(groups), cfg.summaries_per_step)
    return {
        "skills": float(len(buffer.skills)),
        "skills_added": float(added),
        "skills_used": float(len({id(sk) for sk, _ in seen.bandit})),
        "skill_logprob_gain": seen.gain_sum / seen.gain_n if seen.gain_n else 0.0,
    }


def dry_run(cfg: Config) -> list[str]:
    """Validate the config and check env and summarizer; returns report lines."""
    lines = onpolicy.dry_run_lines(
        cfg, f"skill_sd (lambda={cfg.sd_coef}, sync every {cfg.sync_every})"
    )
    if cfg.summarizer == "rule":
        summarizer = RuleSummarizer(cfg.env_id, cfg.env_kwargs)
        kind = type(summarizer.env.unwrapped).__name__
        summarizer.close()
        lines.append(f"summarizer: the rule-based summary hook of {kind}")
    else:
        lines.append(f"summarizer: {cfg.summarizer} (model backend; not loaded in a dry run)")
    return lines
