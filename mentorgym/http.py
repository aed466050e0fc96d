"""The HTTP layer the three servers share (`serve`, `serve-model`, `view`).

- The bind rule: a server binds a loopback address freely; any other address only with a
  token (`require_token_off_loopback`).
- `TokenGate`: ASGI middleware that checks the token (see `auth.py`) on every HTTP request
  and WebSocket handshake and answers a refusal in the server's own error shape.
- `BackgroundServer`: any of the apps served by uvicorn on a thread (tests, notebooks,
  benches).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mentorgym.auth import is_loopback, presented_token, token_matches
from mentorgym.errors import ConfigError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def require_token_off_loopback(host: str, token: str | None, refusal: str) -> None:
    """Refuse (with the server's own `refusal`, saying what to do) to bind `host` beyond
    this machine without a token."""
    if not token and not is_loopback(host):
        raise ConfigError(refusal)


class TokenGate:
    """Every HTTP request and WebSocket handshake must carry `token` (Bearer or X-API-Key,
    or what `extra_token` finds, e.g. a cookie); others get `refuse(scope)`, and a refused
    handshake is closed with 1008 (policy violation)."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        refuse: Callable[[Scope], ASGIApp],
        extra_token: Callable[[Scope], str | None] | None = None,
        x_api_key: bool = True,
    ):
        self.app, self.token, self.refuse = app, token, refuse
        self.extra_token, self.x_api_key = extra_token, x_api_key

    def authorized(self, scope: Scope) -> bool:
        if not self.token:
            return True
        headers = dict(scope.get("headers") or [])
        given = presented_token(
            headers.get(b"authorization", b"").decode("latin-1"),
            headers.get(b"x-api-key", b"").decode("latin-1") if self.x_api_key else None,
        )
        if given is None and self.extra_token is not None:
            given = self.extra_token(scope)
        return token_matches(given, self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.authorized(scope):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await receive()  # the connect event, then refuse the handshake (HTTP 403)
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.refuse(scope)(scope, receive, send)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class BackgroundServer:
    """An ASGI app served by uvicorn on a thread; a context manager. `base_url` is
    `http://HOST:PORT` once it has started; `uvicorn_kwargs` go to `uvicorn.Config`."""

    name = "server"

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **uvicorn_kwargs: Any):
        import uvicorn

        self.app = app
        self.host, self.port = host, port or free_port(host)
        self.base_url = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            app, host=host, port=self.port, **{"log_level": "warning", **uvicorn_kwargs}
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, daemon=True, name=f"mentorgym-{self.name}"
        )

    def start(self, timeout_s: float = 30.0) -> Any:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {self.name} did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
