"""`mentorgym/Remote-v0`: an env that runs on another machine, over OpenEnv's WebSocket protocol.

    env = mentorgym.make("mentorgym/Remote-v0", url="http://envs:8000",
                         env_id="mentorgym/SWE-v0", token="...")

It talks to `mentorgym serve` (the env runs there, its sandbox on that machine's Docker
engine) and to any OpenEnv server whose action has one required text field (found in the
server's /schema). `reset`/`step` send OpenEnv's frames over one WebSocket; the server's
observation becomes chat messages: mentorgym's server sends them as they are, and any
other observation arrives as one user message holding its JSON.

With mentorgym's server it also: passes `token` on the handshake; resumes its session
after a dropped connection (the server keeps it for its idle TTL) and gets the reply of
the call that was in flight, so a network blip does not lose an episode or a sandbox;
asks the server's oracle for `expert_action()`; and reads `num_tasks` from the session.
The turn limit and the SWE grading at truncation run on the server, so this env adds no
`TimeLimit` of its own.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mentorgym.envs.base import Message, StepResult, TextEnv, user
from mentorgym.errors import ConfigError, MentorgymError

TOKEN_ENV_VAR = "MENTORGYM_SERVE_TOKEN"


class RemoteEnvError(MentorgymError):
    """The env server answered with an error frame, or could not be reached."""

    def __init__(self, message: str, code: str = "CONNECTION"):
        super().__init__(message)
        self.code = code


def ws_base(url: str, env_id: str | None) -> str:
    """`http(s)://host:port[/path]` (or ws/wss) to the WebSocket base, with `/env/<env_id>`."""
    parts = urlsplit(url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ConfigError(f"Remote-v0 url {url!r}: write http://HOST:PORT (or ws://, https://)")
    path = parts.path + (f"/env/{env_id}" if env_id else "")
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class RemoteEnv(TextEnv):
    """An env served over OpenEnv's WebSocket protocol (`mentorgym serve` or any OpenEnv server)."""

    def __init__(
        self,
        url: str,
        env_id: str | None = None,
        token: str | None = None,
        connect_timeout_s: float = 10.0,
        message_timeout_s: float | None = None,
        reconnect_attempts: int = 3,
        max_message_bytes: int = 64 * 1024 * 1024,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ):
        """
        Args:
            url: the server's base URL, e.g. http://127.0.0.1:8000.
            env_id: which env of a multi-env `mentorgym serve` (served under /env/<env_id>);
                None for the server's first env, or an OpenEnv server.
            token: sent as `Authorization: Bearer`; default: $MENTORGYM_SERVE_TOKEN.
            message_timeout_s: seconds to wait for one reply; None waits as long as the
                server's own step timeout allows (SWE test runs take minutes).
            reconnect_attempts: resumes tried after a dropped connection (mentorgym servers).
            env_kwargs: sent with the first reset; the server accepts only those its
                operator allowed (`mentorgym serve --client-env-arg KEY`).
        """
        super().__init__(render_mode=render_mode)
        self.base = ws_base(url, env_id)
        self.http_base = self.base.replace("ws", "http", 1)
        self.token = token or os.environ.get(TOKEN_ENV_VAR) or None
        self.connect_timeout_s = connect_timeout_s
        self.message_timeout_s = message_timeout_s
        self.reconnect_attempts = reconnect_attempts
        self.max_message_bytes = max_message_bytes
        self.env_kwargs = env_kwargs
        self.session_id: str | None = None
        self._ws: Any = None
        self._action_field: str | None = None
        self._step_count = 0
        self._num_tasks: int | None = None

    # --- connection ---------------------------------------------------------------------------

    def _headers(self, resume: bool) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if resume and self.session_id:
            headers["X-Session-Id"] = self.session_id
        return headers

    def _connect(self, resume: bool = False) -> None:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        try:
            self._ws = connect(
                self.base + "/ws",
                additional_headers=self._headers(resume),
                open_timeout=self.connect_timeout_s,
                max_size=self.max_message_bytes,
                proxy=None,
            ).__enter__()  # entered for the env's lifetime; close() leaves it
        except InvalidStatus as e:
            status = e.response.status_code
            hint = " (a wrong or missing token?)" if status in (401, 403) else ""
            raise RemoteEnvError(
                f"{self.base}/ws refused the connection: HTTP {status}{hint}"
            ) from e
        except OSError as e:
            raise RemoteEnvError(f"could not reach the env server at {self.base}/ws: {e}") from e
        self.session_id = self._ws.response.headers.get("X-Session-Id") or self.session_id

    def _exchange(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send one frame and read its reply; after a dropped connection, resume and recover."""
        from websockets.exceptions import ConnectionClosed

        if self._ws is None:
            self._connect()
        try:
            return self._checked(self._send_recv(frame))
        except (ConnectionClosed, OSError) as e:
            if not self.session_id:
                raise RemoteEnvError(f"the env server closed the connection: {e}") from e
            return self._checked(self._recover(frame, e))

    def _send_recv(self, frame: dict[str, Any]) -> dict[str, Any]:
        self._ws.send(json.dumps(frame))
        raw = self._ws.recv(timeout=self.message_timeout_s)
        return json.loads(raw)

    def _recover(self, frame: dict[str, Any], cause: BaseException) -> dict[str, Any]:
        from websockets.exceptions import ConnectionClosed

        last: BaseException = cause
        for _ in range(self.reconnect_attempts):
            try:
                self._resume()
                if frame["type"] != "step":
                    return self._send_recv(frame)  # reset with a seed, state: safe to repeat
                reply = self._send_recv({"type": "last"})
                if reply.get("type") == "error":
                    return reply
                if reply["data"].get("step_count") == self._step_count + 1:
                    return reply  # the server ran the step before the connection dropped
                return self._send_recv(frame)  # it never arrived: send it again
            except (ConnectionClosed, OSError, RemoteEnvError) as e:
                last = e
                if isinstance(e, RemoteEnvError) and e.code == "SESSION_ERROR":
                    break  # the server no longer has it: retrying cannot help
        raise RemoteEnvError(
            f"lost the connection to {self.base}/ws and could not resume session "
            f"{self.session_id}: {last}"
        ) from last

    def _resume(self) -> None:
        """Reconnect to this env's session; RemoteEnvError (SESSION_ERROR) if the server no
        longer has it (it answers with an error frame, then closes)."""
        from websockets.exceptions import ConnectionClosed

        self._close_socket()
        self._connect(resume=True)
        try:
            reply = self._send_recv({"type": "state"})
        except ConnectionClosed:  # closed before our frame arrived: its error is buffered
            try:
                reply = json.loads(self._ws.recv(timeout=1))
            except (ConnectionClosed, TimeoutError) as e:
                raise RemoteEnvError(f"session {self.session_id} could not be resumed: {e}") from e
        self._checked(reply)

    @staticmethod
    def _checked(reply: dict[str, Any]) -> dict[str, Any]:
        if reply.get("type") == "error":
            data = reply.get("data") or {}
            code = str(data.get("code", "ERROR"))
            raise RemoteEnvError(f"env server: {data.get('message', 'error')} ({code})", code)
        return reply

    def _close_socket(self) -> None:
        if self._ws is not None:
            ws, self._ws = self._ws, None
            try:
                ws.close()
            except Exception:  # already gone
                pass

    # --- the action field of a foreign OpenEnv server -----------------------------------------

    def _field(self) -> str:
        if self._action_field is None:
            import httpx

            try:
                schema = httpx.get(
                    self.http_base + "/schema",
                    headers=self._headers(False),
                    timeout=self.connect_timeout_s,
                ).json()
                action = schema["action"]
                required = action.get("required", [])
            except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise RemoteEnvError(f"could not read {self.http_base}/schema: {e}") from e
            if len(required) != 1:
                raise ConfigError(
                    f"{self.http_base}: its action needs {required or 'no'} required fields; "
                    "Remote-v0 drives envs whose action is one text field"
                )
            self._action_field = required[0]
        return self._action_field

    # --- Gymnasium API ----------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[list[Message], dict[str, Any]]:
        super().reset(seed=seed)
        data: dict[str, Any] = {}
        if seed is not None:
            data["seed"] = seed
        if options:
            data["options"] = options
        if self.env_kwargs:
            data["env_kwargs"] = self.env_kwargs
        reply = self._exchange({"type": "reset", "data": data})
        self._step_count = 0
        messages, _, _, _, info = _parse(reply["data"])
        return messages, info

    def step(self, action: str) -> StepResult:
        payload = {self._field(): action}
        reply = self._exchange({"type": "step", "data": payload})
        self._step_count += 1
        return _parse(reply["data"])

    def state(self) -> dict[str, Any]:
        """The server's state frame: episode_id, step_count and, from mentorgym, env_id etc."""
        return self._exchange({"type": "state"})["data"]

    @property
    def num_tasks(self) -> int | None:  # type: ignore[override]
        if self._num_tasks is None:
            self._num_tasks = self.state().get("num_tasks")
        return self._num_tasks

    def _oracle(self, kind: str) -> str | None:
        try:
            return self._exchange({"type": kind})["data"]["text"]
        except RemoteEnvError as e:
            if e.code == "UNKNOWN_TYPE":  # a server without mentorgym's extension frames
                return None
            raise

    def expert_action(self) -> str | None:
        return self._oracle("expert_action")

    def random_action(self) -> str:
        text = self._oracle("random_action")
        return text if text is not None else super().random_action()

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.send(json.dumps({"type": "close"}))
            except Exception:  # the server may already be gone; the TTL reaps the session
                pass
            self._close_socket()
        self.session_id = None
        super().close()


def _parse(data: dict[str, Any]) -> StepResult:
    """An observation frame's data as (messages, reward, terminated, truncated, info)."""
    observation = data.get("observation") or {}
    done = bool(data.get("done", False))
    reward = float(data.get("reward") or 0.0)
    raw = observation.get("messages")
    if isinstance(raw, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in raw
    ):
        messages: list[Message] = [{"role": m["role"], "content": m["content"]} for m in raw]  # type: ignore[typeddict-item]
        terminated = bool(observation.get("terminated", done and not observation.get("truncated")))
        truncated = bool(observation.get("truncated", False))
        info = observation.get("info") or {}
    else:  # another server's observation: hand the model its JSON
        messages = [user(json.dumps(observation, ensure_ascii=False, sort_keys=True))]
        terminated, truncated = done, False
        info = dict(data.get("metadata") or observation.get("metadata") or {})
    return messages, reward, terminated, truncated, info
