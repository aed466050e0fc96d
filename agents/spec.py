"""The agent-spec grammar, parsed once: what a string like `hf:runs/x/final` names.

    expert            the env's oracle            random        the env's random turn
    human             a person at the terminal    replay:FILE   a JSON list of turns
    tiny              the offline tiny model      hf:PATH_OR_ID a transformers checkpoint
    openai:URL#MODEL  any OpenAI-compatible server (vllm serve, mentorgym serve-model)
    vllm:MODEL        an in-process vLLM engine
    PATH_OR_ID        a bare path or hub id (with a `/`, or an existing path): as hf:
    NAME              a named model (`mentorgym models list`): as hf:NAME

A named model (`smollm2-135m-instruct`) may stand wherever a path does (`hf:NAME`,
`vllm:NAME`, a bare `NAME`): `path` is its converted checkpoint (`agents/models.py`).

One rule for a bare path: it names transformers weights, exactly like `hf:PATH`, wherever a
spec is read (the CLI's `--agent`, a config's `teacher:` and `student:`, `--dry-run`, the
trainers' teacher), so a dry run and a training run judge a config the same way.

Every reader asks the parsed `AgentSpec` instead of looking at the string: whether its
weights load in this process (`weights`, so a trainer can run the teacher's forward or
train the student), whether it answers from elsewhere (`remote`), whether it can be a
student (`trainable`), and where its policy card lives (`card`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mentorgym.errors import ConfigError

Kind = Literal["hf", "vllm", "openai", "tiny", "expert", "random", "human", "replay", "path"]

SPEC_FORMS = (
    "expert, random, human, replay:FILE, tiny, hf:PATH_OR_ID, openai:BASE_URL#MODEL, "
    "vllm:MODEL, or a bare PATH_OR_ID (as hf:)"
)

_KEYWORDS: dict[str, Kind] = {
    "expert": "expert",
    "random": "random",
    "human": "human",
    "tiny": "tiny",
}
_PREFIXES: dict[str, Kind] = {"hf": "hf", "vllm": "vllm", "openai": "openai", "replay": "replay"}


@dataclass(frozen=True)
class AgentSpec:
    """A parsed agent spec."""

    text: str
    """The spec as written."""
    kind: Kind
    location: str = ""
    """What the spec points at: the path or hub id (`hf`, `path`, `vllm`), the base URL
    (`openai`), the file (`replay`); empty for the keywords."""
    model: str = ""
    """The model name an `openai:` server serves (after `#`)."""

    @property
    def weights(self) -> bool:
        """Whether the spec names transformers weights that load in this process (`hf:`, a
        bare path, `tiny`): a teacher a trainer can run forward, or a student it can train."""
        return self.kind in ("hf", "path", "tiny")

    @property
    def trainable(self) -> bool:
        """Whether it can be a trainer's `student` (its weights load here)."""
        return self.weights

    @property
    def remote(self) -> bool:
        """Whether it answers from another process (`openai:`); everything else runs here."""
        return self.kind == "openai"

    @property
    def in_process(self) -> bool:
        return not self.remote

    @property
    def model_backend(self) -> bool:
        """Whether it is a language model (as opposed to the env's oracle, a person, a file)."""
        return self.kind in ("hf", "path", "tiny", "vllm", "openai")

    @property
    def path(self) -> str:
        """The weights' path or hub id (`hf:`, a bare path, `vllm:`); `tiny`: the shipped tiny
        model's folder. Raises for specs without weights."""
        if self.kind == "tiny":
            from mentorgym.agents.tiny import default_tiny_path

            return str(default_tiny_path())
        if self.kind in ("hf", "path", "vllm"):
            from mentorgym.agents.models import resolve_model_path

            return resolve_model_path(self.location)
        raise ConfigError(f"agent spec {self.text!r} names no model weights")

    @property
    def card(self) -> str | None:
        """Where the policy card is read from: the checkpoint folder for `hf:`, a bare path and
        `vllm:`; None for `openai:` (the server reports its model's folder, or `--card DIR`
        names it) and for agents that are not models."""
        return self.location if self.kind in ("hf", "path", "vllm") else None


def parse_agent_spec(text: str) -> AgentSpec:
    """Parse `text`; a ConfigError names the forms when it fits none."""
    text = str(text).strip()
    if not text:
        raise ConfigError(f"empty agent spec; use one of: {SPEC_FORMS}")
    if text in _KEYWORDS:
        return AgentSpec(text, _KEYWORDS[text])
    prefix, sep, arg = text.partition(":")
    if text in _PREFIXES or (sep and prefix in _PREFIXES):
        kind = _PREFIXES[prefix]
        if not arg:
            raise ConfigError(
                f"agent spec {text!r} names no {kind} target; use one of: {SPEC_FORMS}"
            )
        if kind == "openai":
            url, hash_, model = arg.partition("#")
            if not hash_ or not model or not url:
                raise ConfigError(
                    f"agent spec {text!r}: write openai:BASE_URL#MODEL, "
                    "e.g. openai:http://127.0.0.1:8000/v1#tiny"
                )
            return AgentSpec(text, "openai", url, model)
        return AgentSpec(text, kind, arg)
    if sep and prefix.isidentifier() and not arg.startswith(("/", "\\")) and len(prefix) > 1:
        # `foo:bar` looks like a spec with an unknown kind, not a path (a drive letter or
        # `C:/...` is left to the path rule).
        raise ConfigError(f"unknown agent spec {text!r}; use one of: {SPEC_FORMS}")
    if _looks_like_path(text) or _is_model_name(text):
        return AgentSpec(text, "path", text)
    raise ConfigError(f"unknown agent spec {text!r}; use one of: {SPEC_FORMS}")


def _is_model_name(text: str) -> bool:
    from mentorgym.agents.models import is_model_name

    return is_model_name(text)


def _looks_like_path(text: str) -> bool:
    """A bare spec is a path or hub id when it has a separator (`runs/x/final`,
    `Qwen/Qwen3-4B`), starts like a path (`.`, `~`) or exists here; a lone word that is none
    of the keywords (`gpt`) is a typo, not a model."""
    return "/" in text or "\\" in text or text.startswith((".", "~")) or Path(text).exists()
