"""The wire models of OpenEnv's protocol: what /schema and /openapi.json describe."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TextAction(BaseModel):
    """One assistant turn. `metadata` is OpenEnv's Action base field, accepted and ignored."""

    model_config = ConfigDict(extra="forbid")
    message: str = Field(description="the assistant's whole turn, raw text")
    metadata: dict[str, Any] = Field(default_factory=dict)


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str


class TextObservation(BaseModel):
    """What reset and step return inside `observation`."""

    model_config = ConfigDict(extra="forbid")
    messages: list[ChatMessage] = Field(description="messages to append to the conversation")
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = Field(default_factory=dict)


class EnvState(BaseModel):
    model_config = ConfigDict(extra="allow")
    episode_id: str | None = None
    step_count: int = Field(default=0, ge=0)
    env_id: str | None = None
    session_id: str | None = None
    seed: int | None = None
    task_id: str | None = None
    num_tasks: int | None = None


class ResetRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    seed: int | None = Field(default=None, ge=0)
    episode_id: str | None = Field(default=None, max_length=255)
    options: dict[str, Any] | None = None


class StepRequest(BaseModel):
    """Stateless step: a fresh env is reset with `seed`, then steps once."""

    model_config = ConfigDict(extra="allow")
    action: dict[str, Any]
    timeout_s: float | None = Field(default=None, gt=0)
    request_id: str | None = Field(default=None, max_length=255)
    seed: int | None = Field(default=None, ge=0)


class ObservationResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    observation: dict[str, Any]
    reward: float | None = None
    done: bool = False


class EnvMetadata(BaseModel):
    name: str
    description: str
    readme_content: str | None = None
    version: str | None = None
    author: str | None = None
    documentation_url: str | None = None
    num_tasks: int | None = None
    max_episode_steps: int | None = None


class SchemaResponse(BaseModel):
    action: dict[str, Any]
    observation: dict[str, Any]
    state: dict[str, Any]


class HealthResponse(BaseModel):
    status: Literal["healthy"] = "healthy"


class SessionsResponse(BaseModel):
    active: int
    attached: int
    max_sessions: int
