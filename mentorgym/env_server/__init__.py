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
- A turn limit that truncates runs the env's `on_truncation` hook on the server (the
  `TruncationRules` wrapper `make` adds; SWE grades the state as it stands), so remote and
  in-process episodes score alike.

No traceback reaches a client: an env exception becomes EXECUTION_ERROR with one line that
names it (the traceback goes to the server's log), and the session's env is closed.
"""

from __future__ import annotations

import importlib
from typing import Any

from mentorgym.env_server.service import (
    EnvService,
    ServeSettings,
    Session,
    WireError,
    mcp_reply,
    observation_frame,
)

# The transport (FastAPI, uvicorn) loads on first use, so the session service above is
# importable, and testable, without it.
_LAZY = {
    "create_app": "routes",
    "serve_session": "routes",
    "ENVS_ENV_VAR": "serving",
    "TOKEN_ENV_VAR": "serving",
    "BackgroundEnvServer": "serving",
    "app_from_environ": "serving",
    "check_bind": "serving",
    "serve": "serving",
}

__all__ = [
    "EnvService",
    "ServeSettings",
    "Session",
    "WireError",
    "mcp_reply",
    "observation_frame",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name == "app":  # `uvicorn mentorgym.env_server:app`: built on first access
        return __getattr__("app_from_environ")()
    if name in _LAZY:
        module = importlib.import_module(f"mentorgym.env_server.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(name)
