"""The app: OpenAI's routes over a `ModelService`, its error bodies, and the API key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from mentorgym.http import Scope, TokenGate
from mentorgym.model_server.batcher import Batcher, GenerativeModel
from mentorgym.model_server.openai_format import (
    APIError,
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
    error_response,
)
from mentorgym.model_server.service import ModelService


def create_app(
    policy: GenerativeModel,
    model_name: str,
    *,
    max_batch: int = 64,
    batch_window_s: float = 0.005,
    default_max_tokens: int = 256,
    root: str | None = None,
    api_key: str | None = None,
) -> FastAPI:
    """An OpenAI-compatible app serving `policy` under the name `model_name`.

    `root` is what `/v1/models` reports as the model's root (the checkpoint directory;
    default `model_name`). With `api_key`, every route needs `Authorization: Bearer KEY`.
    `app.state.batcher.generate_calls` counts the batched `generate` calls.
    """
    batcher = Batcher(policy, max_batch=max_batch, window_s=batch_window_s)
    service = ModelService(
        policy, model_name, batcher, default_max_tokens=default_max_tokens, root=root
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="mentorgym model server", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.model_name = model_name
    app.state.service = service
    if api_key:
        app.add_middleware(TokenGate, token=api_key, refuse=_refuse, x_api_key=False)
    app.add_exception_handler(APIError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    _routes(app, service)
    return app


def _routes(app: FastAPI, service: ModelService) -> None:
    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return service.models()

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest) -> dict[str, Any]:
        return await service.chat(req)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest) -> dict[str, Any]:
        return await service.completions(req)

    @app.post("/tokenize")
    async def tokenize(req: TokenizeRequest) -> dict[str, Any]:
        return await service.tokenize(req)

    @app.post("/detokenize")
    async def detokenize(req: DetokenizeRequest) -> dict[str, Any]:
        return service.detokenize(req)


def _refuse(scope: Scope) -> JSONResponse:
    return error_response(
        401, "missing or wrong API key: send Authorization: Bearer KEY", "AuthenticationError"
    )


async def _api_error(_: Request, e: APIError) -> JSONResponse:
    return error_response(e.status, e.message, e.kind)


async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
    parts = []
    for err in e.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return error_response(400, "invalid request: " + "; ".join(parts))
