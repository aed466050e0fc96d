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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mentorgym.agents.trajectory import Trajectory
from mentorgym.errors import ConfigError
from mentorgym.training import onpolicy
from mentorgym.training.config import OnPolicyConfig
from mentorgym.training.losses import clipped_pg_loss, skill_sd_loss
from mentorgym.training.scoring import frozen_copy, hidden_at, logprobs_from_hidden, teacher_view
from mentorgym.training.skills import (
    RuleSummarizer,
    Skill,
    SkillBuffer,
    add_skills,
    make_summarizer,
)
from mentorgym.training.trainer import autocast

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
    student: Any,
    cfg: Config,
    trajs: list[Trajectory],
    mb: onpolicy.MicroBatch,
    lp_skill_BL: torch.Tensor,
    has_B: torch.Tensor,
) -> tuple[float, float]:
    """(sum, count) over the tokens of the micro-batch's successful episodes that had a skill,
    of the teacher's logprob with the skill minus without it."""
    success_B = torch.tensor([trajs[i].success for i in mb.idx], device=has_B.device)
    keep_BL = (has_B & success_B)[:, None] * mb.batch.mask_BL
    if not bool(keep_BL.any()):
        return 0.0, 0.0
    sub = [trajs[i] for i in mb.idx]
    lp_plain_BL, _ = teacher_view(
        teacher, student.tok, sub, mb.episodes, [None] * len(sub), cfg, student.device
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
        trajs = [t for g in groups for t in g]
        adv = onpolicy.group_advantages(groups, cfg.reward, cfg.scale_advantages)
        chosen = [sk for sk in buffer.select(len(groups)) for _ in range(cfg.group_size)]
        run.optimizer.zero_grad(set_to_none=True)
        stats = onpolicy.StepStats()
        bandit: list[tuple[Skill, float]] = []
        gain_sum, gain_n = 0.0, 0.0
        parts = onpolicy.micro_batches(student, cfg, trajs)
        for mb in parts:
            b = mb.batch
            skills = [chosen[i] for i in mb.idx]
            with autocast(student.device, cfg.precision):
                hidden_BLH = hidden_at(student.model, b)
                logp_BL = logprobs_from_hidden(
                    student.model, hidden_BLH, b.target_BL, cfg.rollout_temperature
                )
                adv_B = torch.tensor([adv[i] for i in mb.idx], device=logp_BL.device)
                old_BL, tis_BL = onpolicy.behaviour(cfg, logp_BL, b.logp_old_BL)
                loss = clipped_pg_loss(
                    logp_BL,
                    old_BL,
                    adv_B,
                    b.mask_BL,
                    cfg.clip_low,
                    cfg.clip_high,
                    weights_BT=tis_BL,
                )
                has_B = torch.tensor([sk is not None for sk in skills], device=logp_BL.device)
                loss_sd = torch.zeros(())
                if bool(has_B.any()):
                    # 2. score: the skill-conditioned teacher copy re-scores the sampled tokens
                    notes = [sk.text() if sk is not None else None for sk in skills]
                    sub = [trajs[i] for i in mb.idx]
                    lp_t_BL, _ = teacher_view(
                        teacher, student.tok, sub, mb.episodes, notes, cfg, student.device
                    )
                    # 3. loss: L_GRPO + lambda * L_SD
                    has_BL = has_B[:, None] * b.mask_BL
                    loss_sd = skill_sd_loss(logp_BL, old_BL, lp_t_BL, has_BL, weights_BT=tis_BL)
                    loss = loss + cfg.sd_coef * loss_sd
            (loss * mb.share).backward()
            stats.add(mb, loss, loss_sd=float(loss_sd.detach()))
            stats.add_sampler_gap(mb, logp_BL)
            if bool(has_B.any()):
                bandit += bandit_rewards(skills, adv_B, lp_t_BL, b.logp_old_BL, b.mask_BL)
                s_, n_ = skill_logprob_gain(teacher, student, cfg, trajs, mb, lp_t_BL, has_B)
                gain_sum, gain_n = gain_sum + s_, gain_n + n_
        stats.add_batches(parts)
        # 4. optimizer step; the teacher copy follows every `sync_every` steps
        grad_norm, lr = onpolicy.optimizer_step(run, cfg)
        if run.state.step % cfg.sync_every == 0:
            teacher = frozen_copy(student.model)
        # 5. the skill buffer: every arm used this step is updated, new skills are added
        for sk, value in bandit:
            buffer.update(sk, value)
        added = add_skills(buffer, summarizer, trajs, cfg.summaries_per_step)
        stats.metrics.update(
            skills=float(len(buffer.skills)),
            skills_added=float(added),
            skills_used=float(len({id(sk) for sk, _ in bandit})),
            skill_logprob_gain=gain_sum / gain_n if gain_n else 0.0,
        )
        # 6. log, evaluate, checkpoint (with the buffer)
        onpolicy.end_step(run, cfg, trajs, stats, grad_norm, lr, {"skills": buffer.to_json()})
    if isinstance(summarizer, RuleSummarizer):
        summarizer.close()
    return onpolicy.finish(run, cfg)


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
