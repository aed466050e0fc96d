"""Skills for Skill-SD: the skill record, the UCB buffer, and the summarizers that write skills.

A skill says what worked, what failed and the workflow, in words that transfer to other tasks
of the env. It is written by an LLM (`LLMSummarizer`, any Policy; replies that are not valid
JSON are counted and skipped) or by the env's own rule-based hook (`RuleSummarizer`, calling
`TextEnv.summarize_for_skill`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from mentorgym.agents.base import Policy
from mentorgym.agents.trajectory import Trajectory
from mentorgym.errors import ConfigError

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


def add_skills(buffer: SkillBuffer, summarizer: Summarizer, trajs: list[Trajectory], n: int) -> int:
    """Summarize `n` of the step's episodes (successes first) into the buffer; returns how
    many skills went in."""
    added = 0
    for traj in sorted(trajs, key=lambda t: not t.success)[:n]:
        skill = summarizer.summarize(traj)
        if skill is not None:
            added += buffer.add(skill)
    return added
