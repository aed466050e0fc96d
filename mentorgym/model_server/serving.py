"""Running the model server: `serve_model` (the `serve-model` command) and a background
server for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI

from mentorgym.agents.spec import parse_agent_spec
from mentorgym.errors import ConfigError, MentorgymError
from mentorgym.http import BackgroundServer as _BackgroundServer
from mentorgym.http import require_token_off_loopback
from mentorgym.model_server.app import create_app
from mentorgym.model_server.batcher import GenerativeModel


def load_served_policy(spec: str, **gen_kwargs: Any) -> GenerativeModel:
    """The local model an agent spec names (`tiny`, `hf:PATH`), ready to serve.

    The one place the model server reads the agent-spec grammar."""
    from mentorgym.agents.specs import load_policy

    try:
        policy = load_policy(spec, **gen_kwargs)
    except MentorgymError as e:
        raise ConfigError(f"serve-model {spec}: {e}") from None
    needed = ("generate", "prompt_logprobs", "encode", "tokenizer")
    if not all(hasattr(policy, a) for a in needed):
        raise ConfigError(
            f"serve-model serves a local model: use `tiny` or `hf:PATH`, not {spec!r} "
            "(for vLLM, run `python -m vllm.entrypoints.openai.api_server --model PATH`)"
        )
    return policy  # type: ignore[return-value]


def served_name(spec: str) -> str:
    """What clients call the model by default: the spec, or the path of `hf:PATH` (as
    `vllm serve PATH` does)."""
    parsed = parse_agent_spec(spec)
    return parsed.location if parsed.kind == "hf" else spec


def checkpoint_dir(spec: str) -> str | None:
    """The local checkpoint directory a spec loads (absolute), or None for a hub id."""
    parsed = parse_agent_spec(spec)
    if not parsed.weights:
        return None
    path = Path(parsed.path).expanduser()
    return str(path.resolve()) if path.is_dir() else None


def serve_model(
    spec: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    served_model_name: str | None = None,
    api_key: str | None = None,
    log_level: str = "info",
    **gen_kwargs: Any,
) -> None:
    """Load a local model spec (`tiny`, `hf:PATH`) and serve it until interrupted.

    The served name is `served_model_name`, else `served_name(spec)`; clients address it
    as `openai:http://HOST:PORT/v1#NAME`. `/v1/models` reports the checkpoint directory as
    the model's `root`. Without `api_key` the server binds only to a loopback address.
    """
    import uvicorn

    require_token_off_loopback(
        host,
        api_key,
        f"serve-model binds {host} only with an API key: pass --api-key KEY (clients send "
        "it from $MENTORGYM_API_KEY or $OPENAI_API_KEY), or bind 127.0.0.1",
    )
    policy = load_served_policy(spec, **gen_kwargs)
    name = served_model_name or served_name(spec)
    app = create_app(policy, name, root=checkpoint_dir(spec), api_key=api_key)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


class BackgroundServer(_BackgroundServer):
    """Serve a model app with uvicorn on a thread (tests, notebooks). Use as a context
    manager; `url` is the `/v1` base URL once it has started."""

    name = "model server"

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        super().__init__(app, host, port)
        self.url = f"{self.base_url}/v1"
