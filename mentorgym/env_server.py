"""`mentorgym serve`: registered envs over OpenEnv's wire protocol, with what a cluster needs.

OpenEnv (huggingface/OpenEnv, v0.3) is the protocol TRL, SkyRL and verifiers use to drive
envs as a service. This server speaks it, so their stock clients drive mentorgym envs:

    WS   /ws        one session per connection. Client frames: {"type": "reset", "data":
                    {seed, episode_id, options}}, {"type": "step", "data": {"message": str}},
                    {"type": "state"}, {"type": "close"}, {"type": "mcp", "data": <jsonrpc>}.
                    Server frames: {"type": "observation", "data": {"observation": {...},
                    "reward": float | null, "done": bool}}, {"type": "state", "data": {...}},
                    {"type": "error", "data": {"message", "code"}}.
    GET  /health /schema /metadata /openapi.json       POST /mcp
    POST /reset /step, GET /state                       stateless, a fresh env per request
                                                        (for debugging, as in OpenEnv)

The first env id is served at the root; every env id is also served under
`/env/<env_id>` (e.g. `/env/mentorgym/Sokoban-v0/ws`), so one server can host several.
An observation is `{"messages": [new chat messages], "terminated", "truncated", "info"}`;
`done` is `terminated or truncated`. The action is `{"message": str}` (OpenEnv's text-env
form; unknown fields are rejected).

Additions, all optional so that OpenEnv's stock client still works unchanged:

- A token (`--token` or MENTORGYM_SERVE_TOKEN), checked with `Authorization: Bearer T` or
  `X-API-Key: T` on every route and on the WebSocket handshake. Binding to anything but
  loopback without a token is refused.
- Resume: the handshake's response carries `X-Session-Id`. A connection that drops
  (no `close` message and no clean WebSocket close, code 1000) leaves its session (env, sandbox, episode) alive for the idle
  TTL; connecting with `X-Session-Id: ID` (or `?session_id=ID`) takes it back, and the
  extension frame `{"type": "last"}` returns the reply to the last reset or step (with
  its `step_count`), waiting for a step that was still running.
- An idle TTL (`--session-ttl`): a session with no message for that long is closed and its
  env (and sandbox) closed with it. A running step is not idle.
- A session cap (`--max-sessions`): over it the client gets CAPACITY_REACHED with the
  numbers, and the connection closes (code 1013, try again later).
- Size limits: a frame or request body over `--max-message-bytes` is refused with a message
  that names the limit.
- A step timeout (`--step-timeout`): a step that runs longer ends the episode truncated,
  with `info["truncated_reason"] = "step_timeout"`; the env is closed (which removes its
  container) and the next reset builds a fresh one.
- Extension frames for mentorgym's agents: `{"type": "expert_action"}` and
  `{"type": "random_action"}` answer `{"type": "action", "data": {"text": str | null}}`.
- A turn limit that truncates runs the env's `on_truncation` hook on the server (SWE grades
  the state as it stands), so remote and in-process episodes score alike.

No traceback reaches a client: an env exception becomes EXECUTION_ERROR with one line that
names it (the traceback goes to the server's log), and the session's env is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import gymnasium
from fastapi import APIRouter, Body, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from mentorgym.agents.trajectory import jsonable
from mentorgym.auth import is_loopback, presented_token, token_matches
from mentorgym.envs.registry import describe, load_plugins, make
from mentorgym.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

TOKEN_ENV_VAR = "MENTORGYM_SERVE_TOKEN"
SESSION_HEADER = "x-session-id"


# --- wire models (what /schema and /openapi.json describe) ------------------------------------


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


# --- settings and sessions --------------------------------------------------------------------


@dataclass(frozen=True)
class ServeSettings:
    token: str | None = None
    """Required on every route and the WebSocket handshake when set."""
    max_sessions: int = 64
    session_ttl_s: float = 600.0
    """Idle seconds after which a session (attached or not) is closed."""
    step_timeout_s: float | None = 1800.0
    """Seconds a reset or step may run before the episode ends truncated (None: no limit)."""
    max_message_bytes: int = 4 * 1024 * 1024
    env_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per env id: keyword arguments for `make`, fixed by the operator."""
    client_env_args: frozenset[str] = frozenset()
    """Env kwargs a client may set in its reset frame (`data.env_kwargs`); others are refused."""


class WireError(Exception):
    """A protocol error to send as an OpenEnv error frame."""

    def __init__(self, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.code, self.message, self.extra = code, message, extra

    def frame(self) -> dict[str, Any]:
        return {"type": "error", "data": {"message": self.message, "code": self.code, **self.extra}}


@dataclass
class Session:
    id: str
    env_id: str
    env_kwargs: dict[str, Any]
    env: gymnasium.Env | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_activity: float = field(default_factory=time.monotonic)
    busy: bool = False
    owner: object | None = None
    """The connection that holds this session; None while detached."""
    episode_running: bool = False
    episode_id: str | None = None
    step_count: int = 0
    seed: int | None = None
    task_id: str | None = None
    last_frame: dict[str, Any] | None = None
    closed: bool = False

    def touch(self) -> None:
        self.last_activity = time.monotonic()


def _one_line(e: BaseException) -> str:
    """The exception's type and the first line of its message, at most 300 characters."""
    arg = e.args[0] if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    lines = arg.strip().splitlines()
    first = lines[0][:300] if lines else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


class EnvService:
    """Sessions, their envs, and the thread pool their blocking calls run on."""

    def __init__(self, env_ids: list[str], settings: ServeSettings):
        self.env_ids = env_ids
        self.settings = settings
        self.sessions: dict[str, Session] = {}
        self._reserved = 0
        self._lock = asyncio.Lock()
        self.pool = self._new_pool()
        self._pool_closed = False
        self.stateless = asyncio.Semaphore(4)
        self._reaper: asyncio.Task[None] | None = None

    # running blocking env calls ------------------------------------------------------------

    def _new_pool(self) -> ThreadPoolExecutor:
        # One thread per session at most is busy at a time; a timed-out step keeps its thread
        # until it returns, hence the headroom.
        return ThreadPoolExecutor(
            max_workers=2 * self.settings.max_sessions + 4, thread_name_prefix="mentorgym-env"
        )

    async def call(self, fn: Callable[[], T], timeout_s: float | None) -> T:
        future = asyncio.get_running_loop().run_in_executor(self.pool, fn)
        return await asyncio.wait_for(future, timeout_s)

    def kwargs_for(self, env_id: str) -> dict[str, Any]:
        return dict(self.settings.env_kwargs.get(env_id, {}))

    # session lifecycle ----------------------------------------------------------------------

    async def create(self, env_id: str) -> Session:
        """Reserve a slot, then make the env; raises WireError (CAPACITY_REACHED, FACTORY_ERROR)."""
        async with self._lock:
            held = len(self.sessions) + self._reserved
            if held >= self.settings.max_sessions:
                raise WireError(
                    "CAPACITY_REACHED",
                    f"the server holds {held} of {self.settings.max_sessions} sessions "
                    "(--max-sessions); close a session, wait for idle ones to expire, "
                    "or retry later",
                    active_sessions=held,
                    max_sessions=self.settings.max_sessions,
                )
            self._reserved += 1
        try:
            session = Session(
                id=uuid.uuid4().hex, env_id=env_id, env_kwargs=self.kwargs_for(env_id)
            )
            session.env = await self.call(
                lambda: make(env_id, **session.env_kwargs), self.settings.step_timeout_s
            )
        except Exception as e:
            log.exception("making %s failed", env_id)
            raise WireError(
                "FACTORY_ERROR", f"could not make {env_id}: {_one_line(e)}", factory_name=env_id
            ) from None
        finally:
            async with self._lock:
                self._reserved -= 1
        async with self._lock:
            self.sessions[session.id] = session
        return session

    async def destroy(self, session: Session) -> None:
        async with self._lock:
            self.sessions.pop(session.id, None)
        session.closed = True
        await self.close_env(session)

    async def close_env(self, session: Session) -> None:
        env, session.env = session.env, None
        session.episode_running = False
        if env is not None:
            try:
                await self.call(env.close, 120.0)
            except Exception as e:  # the env is gone either way; its containers are labelled
                log.warning("closing %s (session %s) failed: %s", session.env_id, session.id, e)

    async def reap_idle(self) -> int:
        """Close sessions idle past the TTL; returns how many."""
        now = time.monotonic()
        stale = [
            s
            for s in list(self.sessions.values())
            if not s.busy and now - s.last_activity > self.settings.session_ttl_s
        ]
        for s in stale:
            log.info("session %s idle for %.0f s: closing it", s.id, now - s.last_activity)
            await self.destroy(s)
        return len(stale)

    async def _reap_forever(self) -> None:
        interval = min(max(self.settings.session_ttl_s / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap_idle()
            except Exception:  # keep reaping whatever one close did
                log.exception("idle-session reaper")

    def start(self) -> None:
        if self._pool_closed:  # an app served again after a stop (test clients do that)
            self.pool, self._pool_closed = self._new_pool(), False
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever())

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for s in list(self.sessions.values()):
            await self.destroy(s)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._pool_closed = True
        pools = sys.modules.get("mentorgym.sandboxes.pool")
        if pools is not None:  # the warm containers of SWE envs go with the server
            pools.close_all_pools()

    # the session protocol ------------------------------------------------------------------

    async def handle(self, session: Session, message: Any) -> dict[str, Any] | None:
        """One client frame to one reply frame; None for `close`."""
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise WireError(
                "VALIDATION_ERROR", 'a frame must be a JSON object with a string "type"'
            )
        kind = message["type"]
        data = message.get("data", {})
        if kind == "close":
            return None
        if kind == "state":
            return {"type": "state", "data": self.state(session)}
        if kind == "mcp":
            return {"type": "mcp", "data": mcp_reply(data)}
        if kind == "reset":
            return await self.reset(session, data)
        if kind == "step":
            return await self.step(session, data)
        if kind == "last":
            async with session.lock:
                if session.last_frame is None:
                    raise WireError("SESSION_ERROR", "this session has no reset or step yet")
                frame = session.last_frame
                return {**frame, "data": {**frame["data"], "step_count": session.step_count}}
        if kind in ("expert_action", "random_action"):
            return await self.oracle(session, kind)
        raise WireError(
            "UNKNOWN_TYPE",
            f"Unknown message type: {kind}; use reset, step, state, close, mcp "
            "(mentorgym also answers last, expert_action, random_action)",
        )

    def state(self, session: Session) -> dict[str, Any]:
        env = session.env
        return EnvState(
            episode_id=session.episode_id,
            step_count=session.step_count,
            env_id=session.env_id,
            session_id=session.id,
            seed=session.seed,
            task_id=session.task_id,
            num_tasks=getattr(env.unwrapped, "num_tasks", None) if env is not None else None,
        ).model_dump()

    async def reset(self, session: Session, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise WireError("VALIDATION_ERROR", "reset data must be a JSON object")
        try:
            request = ResetRequest.model_validate(data)
        except ValidationError as e:
            raise WireError("VALIDATION_ERROR", "Invalid reset", errors=_errors(e)) from None
        wanted = self._client_kwargs(session, data.get("env_kwargs"))
        async with session.lock:
            session.busy = True
            try:
                if session.env is None or wanted != session.env_kwargs:
                    await self.close_env(session)
                    session.env_kwargs = wanted
                    try:
                        session.env = await self.call(
                            lambda: make(session.env_id, **wanted), self.settings.step_timeout_s
                        )
                    except Exception as e:
                        log.exception("making %s failed", session.env_id)
                        raise WireError(
                            "FACTORY_ERROR", f"could not make {session.env_id}: {_one_line(e)}"
                        ) from None
                env = session.env
                try:
                    messages, info = await self.call(
                        lambda: env.reset(seed=request.seed, options=request.options),
                        self.settings.step_timeout_s,
                    )
                except TimeoutError:
                    await self.close_env(session)
                    raise WireError(
                        "EXECUTION_ERROR",
                        f"reset ran past the server's step timeout of "
                        f"{self.settings.step_timeout_s:g} s; the env was closed",
                    ) from None
                except Exception as e:
                    log.exception("session %s: reset raised", session.id)
                    await self.close_env(session)
                    raise WireError("EXECUTION_ERROR", f"env.reset raised {_one_line(e)}") from None
                session.episode_running = True
                session.episode_id = request.episode_id or uuid.uuid4().hex
                session.step_count = 0
                session.seed = request.seed
                session.task_id = info.get("task_id") if isinstance(info, dict) else None
                frame = observation_frame(messages, None, False, False, info)
                session.last_frame = frame
                return frame
            finally:
                session.busy = False
                session.touch()

    def _client_kwargs(self, session: Session, client: Any) -> dict[str, Any]:
        merged = self.kwargs_for(session.env_id)
        if client is None:
            return merged if session.env is None else session.env_kwargs
        if not isinstance(client, dict):
            raise WireError("VALIDATION_ERROR", "reset data.env_kwargs must be a JSON object")
        refused = sorted(set(client) - self.settings.client_env_args)
        if refused:
            raise WireError(
                "VALIDATION_ERROR",
                f"env kwargs {refused} may not be set by clients; the server's operator sets "
                "them with `mentorgym serve --env-arg`, or allows them with --client-env-arg",
            )
        return {**merged, **client}

    async def step(self, session: Session, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise WireError("VALIDATION_ERROR", 'step data must be a JSON object {"message": str}')
        try:
            action = TextAction.model_validate(data)
        except ValidationError as e:
            raise WireError("VALIDATION_ERROR", "Invalid message", errors=_errors(e)) from None
        async with session.lock:
            if not session.episode_running or session.env is None:
                raise WireError(
                    "VALIDATION_ERROR",
                    'no episode is running in this session: send {"type": "reset"} first '
                    "(an episode ends when a reply has done=true)",
                )
            env = session.env
            session.busy = True
            try:
                frame = await self._step(session, env, action.message)
                session.last_frame = frame
                return frame
            finally:
                session.busy = False
                session.touch()

    async def _step(self, session: Session, env: gymnasium.Env, text: str) -> dict[str, Any]:
        timeout = self.settings.step_timeout_s
        try:
            messages, reward, terminated, truncated, info = await self.call(
                lambda: env.step(text), timeout
            )
            if truncated and not terminated and hasattr(env.unwrapped, "on_truncation"):
                extra_reward, extra_info = await self.call(env.unwrapped.on_truncation, timeout)
                reward, info = reward + extra_reward, {**info, **extra_info}
        except TimeoutError:
            # The thread cannot be stopped; closing the env removes its sandbox under it.
            session.step_count += 1
            await self.close_env(session)
            message = (
                f"the step ran past the server's step timeout of {timeout:g} s (--step-timeout); "
                "the episode ends truncated and the next reset starts a fresh env"
            )
            info = {"truncated_reason": "step_timeout", "error": message}
            return observation_frame([], 0.0, False, True, info)
        except Exception as e:
            log.exception("session %s: step raised", session.id)
            await self.close_env(session)
            raise WireError(
                "EXECUTION_ERROR",
                f"env.step raised {_one_line(e)}; the episode is over and its env was closed "
                "(reset starts a fresh one)",
            ) from None
        session.step_count += 1
        if terminated or truncated:
            session.episode_running = False
        return observation_frame(messages, float(reward), bool(terminated), bool(truncated), info)

    async def oracle(self, session: Session, kind: str) -> dict[str, Any]:
        async with session.lock:
            env = session.env
            if env is None or not session.episode_running:
                raise WireError("VALIDATION_ERROR", f"{kind} needs a running episode; reset first")
            method = getattr(env.unwrapped, kind, None)
            if method is None:
                return {"type": "action", "data": {"text": None}}
            try:
                text = await self.call(method, self.settings.step_timeout_s)
            except Exception as e:
                log.exception("session %s: %s raised", session.id, kind)
                raise WireError("EXECUTION_ERROR", f"{kind} raised {_one_line(e)}") from None
            finally:
                session.touch()
            return {"type": "action", "data": {"text": text}}


def _errors(e: ValidationError) -> list[dict[str, Any]]:
    return jsonable(e.errors(include_url=False, include_context=False, include_input=False))


def observation_frame(
    messages: list[Any],
    reward: float | None,
    terminated: bool,
    truncated: bool,
    info: dict[str, Any],
) -> dict[str, Any]:
    observation = {
        "messages": jsonable(list(messages)),
        "terminated": terminated,
        "truncated": truncated,
        "info": jsonable(dict(info)),
    }
    done = terminated or truncated
    return {
        "type": "observation",
        "data": {"observation": observation, "reward": reward, "done": done},
    }


def mcp_reply(request: Any) -> dict[str, Any]:
    """mentorgym envs take text actions, not MCP tools: a JSON-RPC error that says so."""
    if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" or "method" not in request:
        return {
            "jsonrpc": "2.0",
            "id": request.get("id") if isinstance(request, dict) else None,
            "error": {"code": -32600, "message": "Invalid Request: a JSON-RPC 2.0 request"},
        }
    return {
        "jsonrpc": "2.0",
        "id": request.get("id"),
        "error": {
            "code": -32601,
            "message": f"Method not found: {request['method']}; mentorgym envs take text "
            'actions over /ws ({"type": "step", "data": {"message": ...}}), not MCP tools',
        },
    }


# --- the app --------------------------------------------------------------------------------


_OPTIONAL_RESET_BODY = Body(default_factory=ResetRequest)  # POST /reset with no body is fine


def _env_router(env_id: str, service: EnvService) -> APIRouter:
    router = APIRouter()
    spec = gymnasium.spec(env_id)

    def fresh_env() -> gymnasium.Env:
        return make(env_id, **service.kwargs_for(env_id))

    @router.get("/health", response_model=HealthResponse, tags=["Health"])
    async def health() -> HealthResponse:
        return HealthResponse()

    @router.get("/metadata", response_model=EnvMetadata, tags=["Environment Info"])
    async def metadata() -> EnvMetadata:
        from mentorgym import __version__

        return EnvMetadata(
            name=env_id,
            description=describe(spec) or env_id,
            version=__version__,
            author="mentorgym",
            max_episode_steps=spec.max_episode_steps,
        )

    @router.get("/schema", response_model=SchemaResponse, tags=["Schema"])
    async def schema() -> SchemaResponse:
        return SchemaResponse(
            action=TextAction.model_json_schema(),
            observation=TextObservation.model_json_schema(),
            state=EnvState.model_json_schema(),
        )

    @router.get("/sessions", response_model=SessionsResponse, tags=["Health"])
    async def sessions() -> SessionsResponse:
        held = list(service.sessions.values())
        return SessionsResponse(
            active=len(held),
            attached=sum(s.owner is not None for s in held),
            max_sessions=service.settings.max_sessions,
        )

    async def stateless(fn: Callable[[gymnasium.Env], T], timeout_s: float | None) -> T:
        async with service.stateless:
            env = await service.call(fresh_env, service.settings.step_timeout_s)
            try:
                return await service.call(lambda: fn(env), timeout_s)
            except TimeoutError:
                raise HTTPException(504, "the env ran past the step timeout") from None
            except (ValueError, ConfigError) as e:
                raise HTTPException(422, f"the env refused the request: {_one_line(e)}") from None
            finally:
                await service.call(env.close, 120.0)

    @router.post("/reset", response_model=ObservationResponse, tags=["Environment Control"])
    async def reset(request: ResetRequest = _OPTIONAL_RESET_BODY) -> dict:
        """Stateless: a fresh env is reset and closed. Sessions use WS /ws."""
        messages, info = await stateless(
            lambda env: env.reset(seed=request.seed, options=request.options),
            service.settings.step_timeout_s,
        )
        return observation_frame(messages, None, False, False, info)["data"]

    @router.post("/step", response_model=ObservationResponse, tags=["Environment Control"])
    async def step(request: StepRequest) -> dict:
        """Stateless: a fresh env is reset with `seed` and steps once. Sessions use WS /ws."""
        try:
            action = TextAction.model_validate(request.action)
        except ValidationError as e:
            raise HTTPException(422, _errors(e)) from None
        limit = service.settings.step_timeout_s
        timeout = min(request.timeout_s, limit) if request.timeout_s and limit else limit

        def reset_and_step(env: gymnasium.Env) -> tuple:
            env.reset(seed=request.seed)
            return env.step(action.message)

        messages, reward, terminated, truncated, info = await stateless(reset_and_step, timeout)
        frame = observation_frame(messages, float(reward), terminated, truncated, info)
        return frame["data"]

    @router.get("/state", response_model=EnvState, tags=["State Management"])
    async def state() -> EnvState:
        """Stateless: the state of a fresh env (sessions send {"type": "state"} on /ws)."""
        return EnvState(env_id=env_id)

    @router.post("/mcp", tags=["MCP"])
    async def mcp(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32700, "message": "Parse error"},
            }
        return mcp_reply(body)

    @router.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await serve_session(websocket, env_id, service)

    return router


async def serve_session(websocket: WebSocket, env_id: str, service: EnvService) -> None:
    """One WebSocket connection: attach (new or resumed), then one reply per frame."""
    resume_id = websocket.headers.get(SESSION_HEADER) or websocket.query_params.get("session_id")
    session: Session | None = None
    try:
        if resume_id:
            session = service.sessions.get(resume_id)
            if session is None or session.env_id != env_id:
                raise WireError(
                    "SESSION_ERROR",
                    f"session {resume_id} is unknown or expired (idle TTL "
                    f"{service.settings.session_ttl_s:g} s); connect without a session id "
                    "to start a new one",
                )
        else:
            session = await service.create(env_id)
    except WireError as e:
        await websocket.accept()
        await websocket.send_text(json.dumps(e.frame()))
        await websocket.close(code=1013 if e.code == "CAPACITY_REACHED" else 1008)
        return
    await websocket.accept(headers=[(SESSION_HEADER.encode(), session.id.encode())])
    me = object()
    session.owner = me  # a resumed session moves to this connection
    session.touch()
    closed_by_client = False
    limit = service.settings.max_message_bytes
    try:
        while True:
            event = await websocket.receive()
            if event["type"] == "websocket.disconnect":
                # A clean close (1000) is the client's choice; anything else is a drop,
                # and the session waits for a resume.
                closed_by_client = event.get("code") == 1000
                break
            raw = event.get("text")
            if raw is None:
                raw = (event.get("bytes") or b"").decode("utf-8", errors="replace")
            if session.owner is not me or session.closed:
                break  # another connection took the session over, or it expired
            session.touch()
            try:
                if len(raw) > limit:
                    raise WireError(
                        "VALIDATION_ERROR",
                        f"a frame of {len(raw)} characters is over this server's limit of "
                        f"{limit} (--max-message-bytes)",
                    )
                try:
                    message = json.loads(raw)
                except json.JSONDecodeError as e:
                    raise WireError("INVALID_JSON", f"Invalid JSON: {e}") from None
                reply = await service.handle(session, message)
            except WireError as e:
                reply = e.frame()
            except Exception as e:  # a server bug: one line to the client, the rest to the log
                log.exception("session %s", session.id)
                reply = WireError("EXECUTION_ERROR", f"internal error: {_one_line(e)}").frame()
            if reply is None:
                closed_by_client = True
                break
            if session.owner is not me:
                break  # the reply stays in last_frame for the connection that took over
            await websocket.send_text(json.dumps(reply))
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # a dropped connection: the session waits for a resume until the TTL
    finally:
        if session.owner is me:
            session.owner = None
            session.touch()
            if closed_by_client:
                await service.destroy(session)
        if websocket.client_state == WebSocketState.CONNECTED:
            try:
                await websocket.close()
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass


class _Gate:
    """ASGI middleware: the token on every route and handshake, and the request size limit."""

    def __init__(self, app: Any, token: str | None, max_bytes: int):
        self.app, self.token, self.max_bytes = app, token, max_bytes

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        if not self.token:
            return True
        given = presented_token(
            headers.get(b"authorization", b"").decode("latin-1"),
            headers.get(b"x-api-key", b"").decode("latin-1"),
        )
        return token_matches(given, self.token)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if not self._authorized(headers):
            if scope["type"] == "websocket":
                await receive()  # the connect event, then refuse the handshake (HTTP 403)
                await send({"type": "websocket.close", "code": 1008})
                return
            return await JSONResponse(
                {"detail": "missing or wrong token: send Authorization: Bearer TOKEN or X-API-Key"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )(scope, receive, send)
        if scope["type"] == "http":
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                return await JSONResponse(
                    {"detail": "send a Content-Length; chunked bodies are not accepted"},
                    status_code=411,
                )(scope, receive, send)
            length = headers.get(b"content-length", b"0")
            if not length.isdigit() or int(length) > self.max_bytes:
                return await JSONResponse(
                    {"detail": f"the body is over this server's limit of {self.max_bytes} bytes"},
                    status_code=413,
                )(scope, receive, send)
        return await self.app(scope, receive, send)


def create_app(env_ids: list[str], settings: ServeSettings | None = None) -> FastAPI:
    """The server for `env_ids`: the first at the root, each under `/env/<env_id>`."""
    settings = settings or ServeSettings()
    load_plugins()
    if not env_ids:
        raise ConfigError("name at least one env id to serve, e.g. mentorgym/Sokoban-v0")
    for env_id in env_ids:
        if env_id not in gymnasium.registry:
            make(env_id)  # raises the registry's "did you mean"
    service = EnvService(list(env_ids), settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        yield
        await service.stop()

    app = FastAPI(
        title="mentorgym env server",
        version="1.0.0",
        description="mentorgym envs over OpenEnv's protocol (WS /ws); see mentorgym.env_server",
        lifespan=lifespan,
    )
    app.include_router(_env_router(env_ids[0], service))
    for env_id in env_ids:
        app.include_router(_env_router(env_id, service), prefix=f"/env/{env_id}")
    app.state.service = service
    app.add_middleware(_Gate, token=settings.token, max_bytes=settings.max_message_bytes)
    return app


# --- running it -------------------------------------------------------------------------------


def check_bind(host: str, token: str | None) -> None:
    if not token and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve envs on {host} without a token: anyone who reaches the port "
            f"could run code in its sandboxes. Pass --token or set {TOKEN_ENV_VAR}, or bind "
            "to 127.0.0.1"
        )


def _uvicorn_config(app: FastAPI, host: str, port: int, settings: ServeSettings) -> Any:
    import uvicorn

    # The handler answers frames over the limit with a clear error; uvicorn's own limit is
    # the hard stop that keeps a hostile frame from filling memory.
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        ws_max_size=4 * settings.max_message_bytes,
        ws="websockets-sansio",
    )


def serve(env_ids: list[str], host: str, port: int, settings: ServeSettings) -> None:
    """Run the server until interrupted (`mentorgym serve`)."""
    import uvicorn

    token = settings.token or os.environ.get(TOKEN_ENV_VAR) or None
    check_bind(host, token)
    settings = ServeSettings(**{**settings.__dict__, "token": token})
    app = create_app(env_ids, settings)
    print(
        f"serving {', '.join(env_ids)} on ws://{host}:{port}/ws (token {'on' if token else 'off'})"
    )
    uvicorn.Server(_uvicorn_config(app, host, port, settings)).run()


ENVS_ENV_VAR = "MENTORGYM_SERVE_ENVS"


def app_from_environ() -> FastAPI:
    """The app for OpenEnv's runtime (`uvicorn mentorgym.env_server:app`, openenv.yaml):
    env ids from $MENTORGYM_SERVE_ENVS (comma-separated), the token from
    $MENTORGYM_SERVE_TOKEN, the rest of the settings at their defaults."""
    env_ids = [e.strip() for e in os.environ.get(ENVS_ENV_VAR, "").split(",") if e.strip()]
    if not env_ids:
        raise ConfigError(f"set {ENVS_ENV_VAR} to the env ids to serve, e.g. mentorgym/SWE-v0")
    return create_app(env_ids, ServeSettings(token=os.environ.get(TOKEN_ENV_VAR) or None))


def __getattr__(name: str) -> Any:
    if name == "app":  # built on first access, so importing this module needs no settings
        return app_from_environ()
    raise AttributeError(name)


class BackgroundEnvServer:
    """`create_app` served by uvicorn on a thread (tests, benches, notebooks); a context manager.

    `url` is the http base URL; `ws_url` the WebSocket one."""

    def __init__(
        self,
        env_ids: list[str],
        settings: ServeSettings | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        import socket

        import uvicorn

        self.settings = settings or ServeSettings()
        check_bind(host, self.settings.token)
        self.app = create_app(env_ids, self.settings)
        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}"
        self.ws_url = f"ws://{host}:{port}/ws"
        self._server = uvicorn.Server(_uvicorn_config(self.app, host, port, self.settings))
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="env-server")

    @property
    def service(self) -> EnvService:
        return self.app.state.service

    def start(self, timeout_s: float = 30.0) -> BackgroundEnvServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the env server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundEnvServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
