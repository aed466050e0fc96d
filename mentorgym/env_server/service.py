"""The session service: sessions, their envs, and one reply per client frame.

No transport here: `EnvService.handle(session, frame)` takes a decoded frame and returns
the reply frame, so it is tested without FastAPI; `routes.py` carries frames over WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import gymnasium
from pydantic import ValidationError

from mentorgym.agents.trajectory import jsonable
from mentorgym.env_server.wire import EnvState, ResetRequest, TextAction
from mentorgym.envs.registry import make
from mentorgym.sandboxes.pool import release_all

log = logging.getLogger(__name__)
T = TypeVar("T")


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
        release_all()  # the warm containers of SWE envs go with the server

    # the session protocol ------------------------------------------------------------------

    async def handle_text(self, session: Session, raw: str) -> dict[str, Any] | None:
        """The reply to one text frame as it came off the wire (None: the client closed)."""
        session.touch()
        limit = self.settings.max_message_bytes
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
            return await self.handle(session, message)
        except WireError as e:
            return e.frame()
        except Exception as e:  # a server bug: one line to the client, the rest to the log
            log.exception("session %s", session.id)
            return WireError("EXECUTION_ERROR", f"internal error: {_one_line(e)}").frame()

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
