"""The policy card: how a checkpoint expects to be prompted and sampled.

Trainers save it beside the weights (`mentorgym_policy.json`). Every model backend applies
it the same way (`hf:` and `vllm:` read it from the checkpoint directory, `openai:` from the
directory the server reports as the model's `root`), so a policy served anywhere sees the
same context window and system prompt, and samples with the same settings, as the student
did in training. Arguments given to a backend win over the card.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

POLICY_CARD = "mentorgym_policy.json"


@dataclass
class PolicyCard:
    """The card's fields; None leaves a backend's own default."""

    context_turns: int = 0
    """Keep only the last k observations (and the actions between them); 0 keeps the whole history."""
    system_prompt: bool = True
    """Whether the policy sees the system prompt."""
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    stop: list[str] | None = None


def read_policy_card(path: str | Path) -> PolicyCard:
    """The card saved in a checkpoint directory, or the defaults when there is none."""
    file = Path(path) / POLICY_CARD
    if not file.is_file():
        return PolicyCard()
    data = json.loads(file.read_text())
    known = {f.name for f in fields(PolicyCard)}
    return PolicyCard(**{k: v for k, v in data.items() if k in known})


def write_policy_card(path: str | Path, card: PolicyCard) -> None:
    Path(path, POLICY_CARD).write_text(json.dumps(asdict(card), indent=2) + "\n")


def card_for(path: str | Path | None) -> PolicyCard:
    """The card of `path` when it is a local directory, else the defaults."""
    if path is not None and Path(path).is_dir():
        return read_policy_card(path)
    return PolicyCard()


def first(*values: Any) -> Any:
    """The first value that is not None (explicit argument, then the card, then the default)."""
    return next((v for v in values if v is not None), None)


BACKEND_DEFAULTS = PolicyCard(
    context_turns=0, system_prompt=True, temperature=1.0, top_p=1.0, max_new_tokens=256
)
"""What a model backend uses where neither an argument nor the card says."""


def merge_card(card: PolicyCard, **explicit: Any) -> PolicyCard:
    """The settings a backend acts with: each explicit argument that is not None, else the
    card's value, else `BACKEND_DEFAULTS`'s. `explicit` takes the card's field names; the
    result has every field but `stop` set (an empty stop list becomes None)."""
    unknown = set(explicit) - {f.name for f in fields(PolicyCard)}
    if unknown:
        raise TypeError(f"merge_card: not policy card fields: {sorted(unknown)}")
    merged = {
        f.name: first(
            explicit.get(f.name), getattr(card, f.name), getattr(BACKEND_DEFAULTS, f.name)
        )
        for f in fields(PolicyCard)
    }
    merged["stop"] = list(merged["stop"]) if merged["stop"] else None
    return replace(card, **merged)
