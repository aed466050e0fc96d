"""Skill-SD: GRPO plus self-distillation from a skill-conditioned copy of the student.

Finished trajectories are summarized into skills, JSON objects with `success_analysis`,
`mistake_analysis` and `golden_workflow`, by a summarizer: an LLM behind the Policy
contract (`summarizer: hf:PATH` / `openai:URL#MODEL` / ...; output that is not valid JSON
is counted and skipped) or, for the built-in envs, a rule-based one that needs no LLM
(`summarizer: rule`). Skills go into a bounded buffer; each episode's teacher view takes
one skill chosen by an upper confidence bound (UCB1 over the skill's usefulness, below).
The teacher is the student's own copy, re-synced every `sync_every` steps, prompted with
the skill plus the task; it re-scores the student's sampled tokens. With l_t = lp_S - lp_T
and rho_t = pi_theta / sg(pi_old):

    L_SD = mean_t rho_t * (exp(-l_t) - 1 + l_t)      (`skill_sd_loss`)
    L    = L_GRPO + lambda * L_SD                    (lambda ~ 1e-3)

as in "Skill-SD: skill-conditioned self-distillation for LLM agents" (objective restated
in DESIGN.md "Algorithms").

A skill's usefulness, the bandit's reward: for each episode it conditioned, the episode's
GRPO advantage times the teacher's mean log-likelihood gain over the student on that
episode, A_b * mean_t(lp_T - lp_S). It is positive when the skill makes the teacher more
confident on episodes that went better than their group and less on those that went
worse, i.e. when the skill separates good behaviour from bad.

Run: `mentorgym train configs/sokoban_skill_sd.yaml`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from mentorgym.agents.trajectory import Trajectory
from mentorgym.errors import ConfigError
from mentorgym.training import grpo
from mentorgym.training import onpolicy as O
from mentorgym.training.losses import clipped_pg_loss, skill_sd_loss

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

    def select(self) -> Skill | None:
        if not self.skills:
            return None
        for s in self.skills:
            if s.uses == 0:
                return s
        total = sum(s.uses for s in self.skills)
        return max(
            self.skills, key=lambda s: s.mean_value + self.c * math.sqrt(math.log(total) / s.uses)
        )

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


class SokobanSummarizer:
    """Rule-based Sokoban skills from what happened in the episode (no LLM)."""

    WORKFLOW = (
        "find a box and the nearest target; walk to the cell behind the box, opposite the "
        "target, without pushing anything; push the box in straight lines onto the target; "
        "never push a box into a corner or against a wall unless that cell is a target; write "
        "exactly one move per turn as <answer>Up</answer> (Up, Down, Left or Right)."
    )

    def summarize(self, traj: Trajectory) -> Skill | None:
        if not traj.turns:
            return None
        n = len(traj.turns)
        fmt = sum(bool(t.info.get("format_error")) for t in traj.turns)
        onto = sum(t.reward >= 0.85 and t.reward < 5 for t in traj.turns)
        off = sum(t.reward <= -1.05 for t in traj.turns)
        seen: set[str] = set()
        revisits = 0
        for t in traj.turns:
            grid = "".join(m["content"] for m in t.observation if m["role"] == "user")
            revisits += grid in seen and bool(grid)
            seen.add(grid)
        moves = " ".join(re.sub(r"</?answer>", "", t.action).strip() for t in traj.turns)
        if traj.success:
            success = f"solved the room in {n} turns with the moves: {moves}."
        else:
            success = f"did not solve the room; {onto} pushes put a box on a target."
        mistakes = []
        if fmt:
            mistakes.append(f"{fmt} of {n} turns were not a single valid move in <answer>")
        if off:
            mistakes.append(f"pushed a box off a target {off} times")
        if revisits:
            mistakes.append(
                f"came back to an earlier position {revisits} times (moving back and forth)"
            )
        if traj.truncated:
            mistakes.append(f"ran out of turns after {n}")
        return Skill(
            success,
            "; ".join(mistakes) or "none seen in this episode.",
            self.WORKFLOW,
            source=_source(traj),
        )


class MathSummarizer:
    """Rule-based skills for math with a python tool (no LLM)."""

    WORKFLOW = (
        "1. write the problem's arithmetic as a short python program that prints the result; "
        '2. call it as <tool_call>{"name": "python", "arguments": {"code": "..."}}</tool_call>; '
        "3. answer with exactly the printed number as <answer>NUMBER</answer>."
    )

    def summarize(self, traj: Trajectory) -> Skill | None:
        if not traj.turns:
            return None
        last = traj.turns[-1].info
        tools = sum("<tool_call>" in t.action for t in traj.turns)
        fmt = sum(bool(t.info.get("format_error")) for t in traj.turns)
        tool_errors = sum(
            "Error" in m["content"] or "Traceback" in m["content"]
            for t in traj.turns[1:]
            for m in t.observation
            if m["role"] == "tool"
        )
        if traj.success:
            success = f"answered {last.get('answer')} correctly after {tools} python call(s)."
        elif "answer" in last:
            success = (
                f"answered {last.get('answer')} but the expected answer was {last.get('expected')}."
            )
        else:
            success = "gave no final answer."
        mistakes = []
        if fmt:
            mistakes.append(
                f"{fmt} turn(s) were malformed (neither a valid tool call nor an answer)"
            )
        if tool_errors:
            mistakes.append(f"{tool_errors} python call(s) failed")
        if tools == 0 and not traj.success:
            mistakes.append("answered without computing in python first")
        if traj.truncated:
            mistakes.append(f"ran out of turns after {len(traj.turns)}")
        return Skill(
            success,
            "; ".join(mistakes) or "none seen in this episode.",
            self.WORKFLOW,
            _source(traj),
        )


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

    def __init__(self, policy: Any, max_chars: int = 6000):
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


def make_summarizer(spec: str, env_id: str) -> Summarizer:
    """`rule`: the built-in rule-based summarizer of the env; else an agent spec for an LLM."""
    if spec == "rule":
        if "Sokoban" in env_id or "Boxoban" in env_id:
            return SokobanSummarizer()
        if "MathTools" in env_id:
            return MathSummarizer()
        raise ConfigError(
            f"no rule-based summarizer for {env_id}; set summarizer to an LLM agent spec "
            "(hf:PATH or openai:URL#MODEL)"
        )
    from mentorgym.agents.specs import load_policy

    return LLMSummarizer(load_policy(spec, temperature=0.0, max_new_tokens=512))


# --- training --------------------------------------------------------------------------------------


@dataclass
class Config(O.OnPolicyConfig):
    summarizer: str = "rule"
    """`rule` (built-in, Sokoban and math) or an agent spec of an LLM summarizer."""
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

    def validate(self) -> None:
        super().validate()
        if self.sync_every <= 0 or self.buffer_size <= 0 or self.summaries_per_step < 0:
            raise ConfigError("sync_every and buffer_size must be > 0, summaries_per_step >= 0")


def train(cfg: Config, run_dir: Path, resume: bool) -> Path:
    """Skill-SD end to end; returns `RUN/final`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    s = O.setup(cfg, run_dir)
    summarizer = make_summarizer(cfg.summarizer, cfg.env_id)
    buffer = SkillBuffer(cfg.buffer_size, cfg.ucb_c)
    if resume:
        buffer.load_json(O.load_extra_state(run_dir).get("skills", []))
    # On resume the copy is re-synced from the restored student (the state at the last sync
    # is not kept): the teacher may be a few steps newer than in an uninterrupted run.
    holder = {"teacher": O.frozen_copy(s.model)}

    def loss_fn(step: int, groups: list[list[Trajectory]]) -> tuple[float, dict[str, float]]:
        trajs = [t for g in groups for t in g]
        adv = grpo.group_advantages(groups, cfg.reward, cfg.scale_advantages)
        chosen = [buffer.select() for _ in trajs]

        def micro(
            idx: list[int], eps: list[O.Episode], b: O.Batch
        ) -> tuple[torch.Tensor, dict[str, float]]:
            hidden_BLH = O.hidden_at(s.model, b)
            logp_BL = O.logprobs_from_hidden(
                s.model, hidden_BLH, b.target_BL, cfg.rollout_temperature
            )
            adv_B = torch.tensor([adv[i] for i in idx], device=logp_BL.device)
            loss_pg = clipped_pg_loss(
                logp_BL, b.logp_old_BL, adv_B, b.mask_BL, cfg.clip_low, cfg.clip_high
            )
            skills = [chosen[i] for i in idx]
            has_BL = (
                torch.tensor([sk is not None for sk in skills], device=logp_BL.device)[:, None]
                * b.mask_BL
            )
            if not bool(has_BL.any()):
                return loss_pg, {"loss_sd": 0.0}
            notes = [sk.text() if sk is not None else None for sk in skills]
            sub = [trajs[i] for i in idx]
            lp_t_BL, _ = O.teacher_view(holder["teacher"], s.tok, sub, eps, notes, cfg, s.device)
            loss_sd = skill_sd_loss(logp_BL, b.logp_old_BL, lp_t_BL, has_BL)
            gain_BL = (lp_t_BL - b.logp_old_BL) * b.mask_BL
            gain_B = gain_BL.sum(1) / b.mask_BL.sum(1).clamp_min(1)
            for j, sk in enumerate(skills):
                if sk is not None:
                    buffer.update(sk, float(adv_B[j]) * float(gain_B[j]))
            return loss_pg + cfg.sd_coef * loss_sd, {"loss_sd": float(loss_sd.detach())}

        loss, info = O.accumulate(s, cfg, trajs, micro)
        ordered = sorted(trajs, key=lambda t: not t.success)
        added = 0
        for traj in ordered[: cfg.summaries_per_step]:
            skill = summarizer.summarize(traj)
            if skill is not None:
                added += buffer.add(skill)
        info.update(skills=float(len(buffer.skills)), skills_added=float(added))
        return loss, info

    def on_step_end(step: int) -> None:
        if step % cfg.sync_every == 0:
            holder["teacher"] = O.frozen_copy(s.model)

    return O.train_loop(
        cfg,
        run_dir,
        resume,
        s,
        "skill_sd",
        loss_fn,
        on_step_end,
        lambda: {"skills": buffer.to_json()},
    )


def dry_run(cfg: Config) -> list[str]:
    """Validate the config and check env and summarizer; returns report lines."""
    lines = O.dry_run_lines(cfg, f"skill_sd (lambda={cfg.sd_coef}, sync every {cfg.sync_every})")
    if cfg.summarizer == "rule":
        lines.append(f"summarizer: {type(make_summarizer('rule', cfg.env_id)).__name__}")
    else:
        lines.append(f"summarizer: {cfg.summarizer} (model backend; not loaded in a dry run)")
    return lines
