"""The app: OpenEnv's routes for each served env, the WebSocket session loop, the gate."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import gymnasium
from fastapi import APIRouter, Body, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from mentorgym.env_server.service import (
    EnvService,
    ServeSettings,
    Session,
    WireError,
    _errors,
    _one_line,
    mcp_reply,
    observation_frame,
)
from mentorgym.env_server.wire import (
    EnvMetadata,
    EnvState,
    HealthResponse,
    ObservationResponse,
    ResetRequest,
    SchemaResponse,
    SessionsResponse,
    StepRequest,
    TextAction,
    TextObservation,
)
from mentorgym.envs.registry import describe, load_plugins, make
from mentorgym.errors import ConfigError
from mentorgym.http import ASGIApp, Receive, Scope, Send, TokenGate

T = TypeVar("T")

SESSION_HEADER = "x-session-id"


_OPTIONAL_RESET_BODY = Body(default_factory=ResetRequest)  # POST /reset with no body is fine


def _env_router(env_id: str, service: EnvService) -> APIRouter:
    """OpenEnv's routes for one env: information, the stateless debug routes, the session."""
    router = APIRouter()
    _info_routes(router, env_id, service)
    _stateless_routes(router, env_id, service)

    @router.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await serve_session(websocket, env_id, service)

    return router


def _info_routes(router: APIRouter, env_id: str, service: EnvService) -> None:
    spec = gymnasium.spec(env_id)

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


async def _stateless(
    env_id: str, service: EnvService, fn: Callable[[gymnasium.Env], T], timeout_s: float | None
) -> T:
    """`fn` on a fresh env, closed afterwards (the debug routes keep no session)."""
    async with service.stateless:
        fresh = lambda: make(env_id, **service.kwargs_for(env_id))  # noqa: E731
        env = await service.call(fresh, service.settings.step_timeout_s)
        try:
            return await service.call(lambda: fn(env), timeout_s)
        except TimeoutError:
            raise HTTPException(504, "the env ran past the step timeout") from None
        except (ValueError, ConfigError) as e:
            raise HTTPException(422, f"the env refused the request: {_one_line(e)}") from None
        finally:
            await service.call(env.close, 120.0)


def _stateless_routes(router: APIRouter, env_id: str, service: EnvService) -> None:
    @router.post("/reset", response_model=ObservationResponse, tags=["Environment Control"])
    async def reset(request: ResetRequest = _OPTIONAL_RESET_BODY) -> dict:
        """Stateless: a fresh env is reset and closed. Sessions use WS /ws."""
        messages, info = await _stateless(
            env_id,
            service,
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

        out = await _stateless(env_id, service, reset_and_step, timeout)
        messages, reward, terminated, truncated, info = out
        return observation_frame(messages, float(reward), terminated, truncated, info)["data"]


async def _attach(websocket: WebSocket, env_id: str, service: EnvService) -> Session | None:
    """The session this connection asked for (resumed by id, or new); None once refused."""
    resume_id = websocket.headers.get(SESSION_HEADER) or websocket.query_params.get("session_id")
    try:
        if not resume_id:
            return await service.create(env_id)
        session = service.sessions.get(resume_id)
        if session is None or session.env_id != env_id:
            raise WireError(
                "SESSION_ERROR",
                f"session {resume_id} is unknown or expired (idle TTL "
                f"{service.settings.session_ttl_s:g} s); connect without a session id "
                "to start a new one",
            )
        return session
    except WireError as e:
        await websocket.accept()
        await websocket.send_text(json.dumps(e.frame()))
        await websocket.close(code=1013 if e.code == "CAPACITY_REACHED" else 1008)
        return None


async def serve_session(websocket: WebSocket, env_id: str, service: EnvService) -> None:
    """One WebSocket connection: attach (new or resumed), then one reply per frame."""
    session = await _attach(websocket, env_id, service)
    if session is None:
        return
    await websocket.accept(headers=[(SESSION_HEADER.encode(), session.id.encode())])
    me = object()
    session.owner = me  # a resumed session moves to this connection
    session.touch()
    closed_by_client = False
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
            reply = await service.handle_text(session, raw)
            if reply is None:
                closed_by_client = True
                break
            if session.owner is not me:
                break  # the reply stays in last_frame for the connection that took over
            await websocket.send_text(json.dumps(reply))
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # a dropped connection: the session waits for a resume until the TTL
    finally:
        await _detach(websocket, session, me, service, closed_by_client)


async def _detach(
    websocket: WebSocket, session: Session, me: object, service: EnvService, closed: bool
) -> None:
    if session.owner is me:
        session.owner = None
        session.touch()
        if closed:
            await service.destroy(session)
    if websocket.client_state == WebSocketState.CONNECTED:
        try:
            await websocket.close()
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass


def _refuse(scope: Scope) -> JSONResponse:
    return JSONResponse(
        {"detail": "missing or wrong token: send Authorization: Bearer TOKEN or X-API-Key"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


class _SizeLimit:
    """ASGI middleware: a request body must declare its length, at most `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
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
    # Added last, so it runs first: no byte of a request is read before its token is checked.
    app.add_middleware(_SizeLimit, max_bytes=settings.max_message_bytes)
    app.add_middleware(TokenGate, token=settings.token, refuse=_refuse)
    return app
