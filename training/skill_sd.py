"""Skill-SD: GRPO plus self-distillation from a skill-conditioned copy of the student.

Finished trajectories are summarized into skills, JSON objects with `success_analysis`,
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

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from mentorgym.agents.base import Policy
from mentorgym.agents.trajectory import Trajectory
from mentorgym.errors import ConfigError
from mentorgym.training import onpolicy
from mentorgym.training.config import OnPolicyConfig
from mentorgym.training.losses import clipped_pg_loss, skill_sd_loss
from mentorgym.training.scoring import frozen_copy, hidden_at, logprobs_from_hidden, teacher_view
from mentorgym.training.trainer import autocast

SKILL_KEYS = ("success_analysis", "mistake_analysis", "golden_workflow")


@dataclass
class Skill:
    success_analysis: str
    mistake_analysis: str
    golden_workflow: str
    source: str = ""
    """Where it came from (env seed and outcome), for reading the buffer."""
    uses: int = 0
    value_sum: float = 0.0

    def text(self) -> str:
        """The skill as the teacher's system-prompt note."""
        return (
            "A skill learned from earlier attempts at this kind of task:\n"
            f"What worked: {self.success_analysis}\n"
            f"Mistakes to avoid: {self.mistake_analysis}\n"
            f"Workflow: {self.golden_workflow}"
        )

    @property
    def mean_value(self) -> float:
        return self.value_sum / self.uses if self.uses else 0.0


class SkillBuffer:
    """At most `capacity` skills; `select` is UCB1: an unused skill first, else the highest
    mean value + c * sqrt(ln(total uses) / uses). When full, a new skill replaces the used
    skill with the lowest mean value (unused skills are never evicted by a newcomer)."""

    def __init__(self, capacity: int = 32, c: float = 1.0):
        if capacity <= 0:
            raise ConfigError(f"skill buffer capacity must be > 0, got {capacity}")
        self.capacity = capacity
        self.c = c
        self.skills: list[Skill] = []

    def add(self, skill: Skill) -> bool:
        """Add `skill`; returns False when the buffer is full of unused skills."""
        if len(self.skills) < self.capacity:
            self.skills.append(skill)
            return True
        used = [i for i, s in enumerate(self.skills) if s.uses]
        if not used:
            return False
        worst = min(used, key=lambda i: self.skills[i].mean_value)
        self.skills[worst] = skill
        return True

    def select(self, n: int) -> list[Skill | None]:
        """`n` picks by UCB1, each pick counted as a pending use for the next one (so one
        step's picks spread over the arms); an unused skill comes first."""
        if not self.skills:
            return [None] * n
        pending = [0] * len(self.skills)
        picks: list[Skill | None] = []
        for _ in range(n):
            uses = [s.uses + p for s, p in zip(self.skills, pending, strict=True)]
            fresh = [i for i, u in enumerate(uses) if u == 0]
            if fresh:
                i = fresh[0]
            else:
                total = sum(uses)
                i = max(
                    range(len(self.skills)),
                    key=lambda j: (
                        self.skills[j].mean_value + self.c * math.sqrt(math.log(total) / uses[j])
                    ),
                )
            pending[i] += 1
            picks.append(self.skills[i])
        return picks

    def update(self, skill: Skill, reward: float) -> None:
        skill.uses += 1
        skill.value_sum += reward

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.skills]

    def load_json(self, items: list[dict[str, Any]]) -> None:
        self.skills = [Skill(**d) for d in items][: self.capacity]


# --- summarizers ---------------------------------------------------------------------------------


class Summarizer(Protocol):
    def summarize(self, traj: Trajectory) -> Skill | None: ...


def _source(traj: Trajectory) -> str:
    return f"seed={traj.seed} {'success' if traj.success else 'failure'}"


class RuleSummarizer:
    """Skills from the env's own `summarize_for_skill` hook (no LLM)."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any]):
        from mentorgym import make

        self.env = make(env_id, **env_kwargs)

    def summarize(self, traj: Trajectory) -> Skill | None:
        summary = self.env.unwrapped.summarize_for_skill(traj.turns, traj.success, traj.truncated)
        return None if summary is None else Skill(*summary, source=_source(traj))

    def close(self) -> None:
        self.env.close()


SUMMARY_PROMPT = (
    "You review one attempt of an agent at a task and distill a reusable skill. Reply with "
    "only a JSON object with three string fields: success_analysis (what worked), "
    "mistake_analysis (what went wrong and how to avoid it), golden_workflow (the steps that "
    "solve this kind of task)."
)


def parse_skill_json(text: str, source: str = "") -> Skill | None:
    """A Skill from a model's reply: the first {...} object with the three fields, else None."""
    start = text.find("{")
    while start >= 0:
        depth = 0
        for end in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                try:
                    d = json.loads(text[start : end + 1])
                except json.JSONDecodeError:
                    break
                if isinstance(d, dict) and all(
                    isinstance(d.get(k), str) and d[k].strip() for k in SKILL_KEYS
                ):
                    return Skill(*(d[k].strip() for k in SKILL_KEYS), source=source)
                break
        start = text.find("{", start + 1)
    return None


class LLMSummarizer:
    """Skills written by any Policy (an LLM) from an episode transcript; invalid JSON -> None."""

    def __init__(self, policy: Policy, max_chars: int = 6000):
        self.policy = policy
        self.max_chars = max_chars
        self.invalid = 0
        """Replies that held no valid skill JSON."""

    def transcript(self, traj: Trajectory) -> str:
        parts = []
        for t in traj.turns:
            parts += [
                f"[{m['role']}] {m['content']}" for m in t.observation if m["role"] != "system"
            ]
            parts.append(f"[assistant] {t.action}")
        text = "\n".join(parts)
        if len(text) > self.max_chars:  # keep the end: where the episode succeeded or failed
            text = "...\n" + text[-self.max_chars :]
        outcome = "succeeded" if traj.success else "failed"
        return f"The attempt {outcome} (return {traj.return_:.2f}).\n\n{text}"

    def summarize(self, traj: Trajectory) -> Skill | None:
        messages = [
            {"role": "system", "content": SUMMARY_PROMPT},
            {"role": "user", "content": self.transcript(traj)},
        ]
        skill = parse_skill_json(self.policy.act(messages).text, _source(traj))
        self.invalid += skill is None
        return skill


def make_summarizer(spec: str, env_id: str, env_kwargs: dict[str, Any]) -> Summarizer:
    """`rule`: the env's rule-based hook; else an agent spec for an LLM."""
    if spec == "rule":
        return RuleSummarizer(env_id, env_kwargs)
    from mentorgym.agents.specs import load_policy

    return LLMSummarizer(load_policy(spec, temperature=0.0, max_new_tokens=512))


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


def add_skills(buffer: SkillBuffer, summarizer: Summarizer, trajs: list[Trajectory], n: int) -> int:
    """Summarize `n` of the step's episodes (successes first) into the buffer; returns how
    many skills went in."""
    added = 0
    for traj in sorted(trajs, key=lambda t: not t.success)[:n]:
        skill = summarizer.summarize(traj)
        if skill is not None:
            added += buffer.add(skill)
    return added


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
                loss = clipped_pg_loss(
                    logp_BL, b.logp_old_BL, adv_B, b.mask_BL, cfg.clip_low, cfg.clip_high
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
                    loss_sd = skill_sd_loss(logp_BL, b.logp_old_BL, lp_t_BL, has_BL)
                    loss = loss + cfg.sd_coef * loss_sd
            (loss * mb.share).backward()
            stats.add(mb, loss, loss_sd=float(loss_sd.detach()))
            if bool(has_B.any()):
                # The bandit's reward per episode: A_b * the teacher's mean gain over the student.
                gain_B = ((lp_t_BL - b.logp_old_BL) * b.mask_BL).sum(1) / b.mask_BL.sum(
                    1
                ).clamp_min(1)
                for j, sk in enumerate(skills):
                    if sk is not None:
                        bandit.append((sk, float(adv_B[j]) * float(gain_B[j])))
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
