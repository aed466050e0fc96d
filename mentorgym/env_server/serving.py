"""Running the env server: the bind rule, `serve`, the OpenEnv runtime's `app`, and a
background server for tests."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

from mentorgym.env_server.routes import create_app
from mentorgym.env_server.service import EnvService, ServeSettings
from mentorgym.errors import ConfigError
from mentorgym.http import BackgroundServer, require_token_off_loopback

TOKEN_ENV_VAR = "MENTORGYM_SERVE_TOKEN"


def check_bind(host: str, token: str | None) -> None:
    require_token_off_loopback(
        host,
        token,
        f"refusing to serve envs on {host} without a token: anyone who reaches the port "
        f"could run code in its sandboxes. Pass --token or set {TOKEN_ENV_VAR}, or bind "
        "to 127.0.0.1",
    )


def _uvicorn_kwargs(settings: ServeSettings) -> dict[str, Any]:
    # The handler answers frames over the limit with a clear error; uvicorn's own limit is
    # the hard stop that keeps a hostile frame from filling memory.
    return {"ws_max_size": 4 * settings.max_message_bytes, "ws": "websockets-sansio"}


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
    uvicorn.run(app, host=host, port=port, log_level="warning", **_uvicorn_kwargs(settings))


ENVS_ENV_VAR = "MENTORGYM_SERVE_ENVS"


def app_from_environ() -> FastAPI:
    """The app for OpenEnv's runtime (`uvicorn mentorgym.env_server:app`, openenv.yaml):
    env ids from $MENTORGYM_SERVE_ENVS (comma-separated), the token from
    $MENTORGYM_SERVE_TOKEN, the rest of the settings at their defaults."""
    env_ids = [e.strip() for e in os.environ.get(ENVS_ENV_VAR, "").split(",") if e.strip()]
    if not env_ids:
        raise ConfigError(f"set {ENVS_ENV_VAR} to the env ids to serve, e.g. mentorgym/SWE-v0")
    return create_app(env_ids, ServeSettings(token=os.environ.get(TOKEN_ENV_VAR) or None))


class BackgroundEnvServer(BackgroundServer):
    """`create_app` served by uvicorn on a thread (tests, benches, notebooks); a context manager.

    `url` is the http base URL; `ws_url` the WebSocket one."""

    name = "env server"

    def __init__(
        self,
        env_ids: list[str],
        settings: ServeSettings | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.settings = settings or ServeSettings()
        check_bind(host, self.settings.token)
        app = create_app(env_ids, self.settings)
        super().__init__(app, host, port, **_uvicorn_kwargs(self.settings))
        self.url = self.base_url
        self.ws_url = f"ws://{host}:{self.port}/ws"

    @property
    def service(self) -> EnvService:
        return self.app.state.service
