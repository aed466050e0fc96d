"""`mentorgym serve-model`: a local model behind the OpenAI wire format that `vllm serve` speaks.

It lets a small machine serve the tiny model (or any `hf:` checkpoint) as a teacher to
anything that talks to vLLM: the `openai:` backend, the official `openai` client, curl.

Routes (shapes follow OpenAI and vLLM's extensions):

    GET  /v1/models
    POST /v1/chat/completions   messages, n, temperature, top_p, max_tokens |
                                max_completion_tokens, stop, seed, logprobs, top_logprobs,
                                return_tokens_as_token_ids (vLLM); tools are ignored
    POST /v1/completions        prompt (str, [str], [int] or [[int]]), echo, logprobs (legacy
                                format), prompt_logprobs and return_tokens_as_token_ids (vLLM)
    POST /tokenize, /detokenize vLLM's shapes (prompt or chat messages)

Requests that arrive within a few milliseconds of each other (or while the model is busy)
are served by one batched `generate` call per group of equal sampling settings. Streaming
is not supported.

`/v1/models` reports the checkpoint directory as the model's `root` (as vLLM does), so an
`openai:` client on this machine reads the checkpoint's policy card and tokenizer from it.
With an API key (`--api-key`, as `vllm serve --api-key`) every route asks for
`Authorization: Bearer KEY`; without one the server binds only to a loopback address.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal, Protocol, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from mentorgym.auth import is_loopback, presented_token, token_matches
from mentorgym.envs.base import Message
from mentorgym.errors import ConfigError

T = TypeVar("T")

_REMEMBERED_TURNS = 4096


class Generation(Protocol):
    token_ids: list[int]
    logprobs: list[float]
    top_logprobs: list[dict[int, float]] | None
    text: str
    finish_reason: str


class GenerativeModel(Protocol):
    """What the server needs from a policy: `HFPolicy` offers all of it."""

    tokenizer: Any

    def generate(
        self,
        prompt_ids: list[list[int]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop: list[str] | None = None,
        top_logprobs: int = 0,
        seed: int | None = None,
    ) -> list[Any]: ...

    def prompt_logprobs(
        self, ids: list[int], top_k: int = 0
    ) -> tuple[list[float | None], list[dict[int, float]] | None]: ...

    def encode(self, messages: list[Message]) -> list[int]: ...


# --- request models ---------------------------------------------------------------------------


class _Request(BaseModel):
    # Unknown fields are ignored, as OpenAI-compatible servers do for clients that send
    # parameters from newer API versions.
    model_config = ConfigDict(extra="ignore")


class _Sampling(_Request):
    model: str
    n: int = Field(1, ge=1, le=64)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    return_tokens_as_token_ids: bool = False


class ChatMessage(_Request):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    prompt_logprobs: int | None = Field(None, ge=0, le=20)


class TokenizeRequest(_Request):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_generation_prompt: bool = True
    add_special_tokens: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(_Request):
    model: str | None = None
    tokens: list[int]


class APIError(Exception):
    """An error answered as OpenAI's `{"error": {...}}` body."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


# --- the batcher ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenParams:
    """Sampling settings; requests with equal params share one `generate` call.

    `seed` is not part of the grouping: one batched `generate` has one random generator, so
    a batch is seeded by the first seed among its requests. A seeded request is therefore
    reproducible when it runs alone (or with the same companions), not in every batch;
    clients that send a fresh seed per request (the `openai:` backend) still batch.
    """

    max_new_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0
    seed: int | None = field(default=None, compare=False, hash=False)


@dataclass
class _Pending:
    prompts: list[list[int]]
    params: GenParams
    future: asyncio.Future[list[Any]]


@dataclass
class Batcher:
    """Collects generate requests for `window_s` (or up to `max_batch` prompts) and runs one
    `policy.generate` per group of equal params. The model runs on one worker thread, so
    requests that arrive while it is busy join the next batch."""

    policy: GenerativeModel
    max_batch: int = 64
    window_s: float = 0.005
    generate_calls: int = 0
    """How many times `policy.generate` ran (tests and metrics read it)."""
    batch_sizes: list[int] = field(default_factory=list)
    _queue: asyncio.Queue[_Pending] | None = None
    _task: asyncio.Task[None] | None = None
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="mentorgym-model")
    )

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False)

    async def generate(self, prompts: list[list[int]], params: GenParams) -> list[Any]:
        if self._queue is None:
            raise RuntimeError("the batcher is not running; start the app with its lifespan")
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(prompts, params, future))
        return await future

    async def run_model(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run any other model call on the model's thread, serialized with generation."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].prompts)
            deadline = loop.time() + self.window_s
            while size < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                batch.append(item)
                size += len(item.prompts)
            groups: dict[GenParams, list[_Pending]] = {}
            for item in batch:
                groups.setdefault(item.params, []).append(item)
            for params, items in groups.items():
                seed = next((i.params.seed for i in items if i.params.seed is not None), None)
                await self._run_group(replace(params, seed=seed), items)

    async def _run_group(self, params: GenParams, items: list[_Pending]) -> None:
        prompts = [p for item in items for p in item.prompts]
        self.generate_calls += 1
        self.batch_sizes.append(len(prompts))
        try:
            gens = await self.run_model(
                self.policy.generate,
                prompts,
                max_new_tokens=params.max_new_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                stop=list(params.stop) or None,
                top_logprobs=params.top_logprobs,
                seed=params.seed,
            )
        except Exception as e:  # one bad batch must not stop the server
            for item in items:
                if not item.future.done():
                    item.future.set_exception(e)
            return
        start = 0
        for item in items:
            if not item.future.done():
                item.future.set_result(gens[start : start + len(item.prompts)])
            start += len(item.prompts)


# --- the app ----------------------------------------------------------------------------------


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
    tokenizer = policy.tokenizer
    vocab_size = len(tokenizer)
    config = getattr(getattr(policy, "model", None), "config", None)
    max_model_len = int(getattr(config, "max_position_embeddings", 0) or 0) or None
    created = int(time.time())

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
    if api_key:
        app.add_middleware(_BearerKey, api_key=api_key)
    # Assistant turns this server sampled, by text: a chat client sends back only text, so
    # the chat route re-encodes a turn it wrote as the ids it sampled (a text written twice
    # with different ids keeps the latest; clients that know their ids send token ids to
    # /v1/completions instead, as the `openai:` backend does).
    sampled_by_text: dict[str, list[int]] = {}

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        return _error(e.status, e.message, e.kind)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        parts = []
        for err in e.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return _error(400, "invalid request: " + "; ".join(parts))

    def check_model(name: str | None) -> None:
        if name is not None and name != model_name:
            raise APIError(
                404,
                f"The model `{name}` does not exist. Available models: {model_name}",
                "NotFoundError",
            )

    def check_ids(ids: list[int]) -> None:
        bad = [t for t in ids if not 0 <= t < vocab_size]
        if bad:
            raise APIError(400, f"token ids {bad[:5]} are outside the vocabulary [0, {vocab_size})")

    def check_length(n_prompt: int, max_tokens: int) -> None:
        if max_model_len is not None and n_prompt + max_tokens > max_model_len:
            raise APIError(
                400,
                f"This model's maximum context length is {max_model_len} tokens. However, you "
                f"requested {n_prompt + max_tokens} tokens ({n_prompt} in the prompt, "
                f"{max_tokens} in the completion). Reduce the prompt or max_tokens.",
            )

    def params_of(req: _Sampling, max_tokens: int, top_logprobs: int) -> GenParams:
        if req.stream:
            raise APIError(
                400, "stream=true is not supported by mentorgym serve-model; set stream=false"
            )
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        return GenParams(
            max_new_tokens=max_tokens,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            stop=stop,
            top_logprobs=top_logprobs,
            seed=req.seed,
        )

    async def generate(prompts: list[list[int]], params: GenParams) -> list[Any]:
        if params.max_new_tokens == 0:
            return [_Empty() for _ in prompts]
        try:
            return await batcher.generate(prompts, params)
        except Exception as e:
            raise APIError(
                500, f"generation failed: {type(e).__name__}: {e}", "InternalServerError"
            ) from e

    def token_str(token_id: int, as_ids: bool) -> str:
        return f"token_id:{token_id}" if as_ids else tokenizer.decode([token_id])

    def encode_chat_request(messages: list[Message]) -> list[int]:
        sampled = getattr(policy, "sampled", None)
        if sampled is None:
            return policy.encode(messages)
        key = f"chat-request-{uuid.uuid4().hex}"
        turn = 0
        for m in messages:
            if m["role"] == "assistant":
                ids = sampled_by_text.get(m["content"])
                if ids is not None:
                    sampled.remember(key, turn, m["content"], ids)
                turn += 1
        try:
            return policy.encode(messages, episode=key)  # type: ignore[call-arg]
        finally:
            sampled.forget(key)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": model_name, "object": "model", "created": created, "owned_by": "mentorgym"}
        card |= {"root": root or model_name, "max_model_len": max_model_len}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest) -> dict[str, Any]:
        check_model(req.model)
        if req.top_logprobs and not req.logprobs:
            raise APIError(400, "top_logprobs needs logprobs=true")
        max_tokens = req.max_completion_tokens or req.max_tokens
        max_tokens = default_max_tokens if max_tokens is None else max_tokens
        prompt = await batcher.run_model(encode_chat_request, _to_messages(req.messages))
        check_length(len(prompt), max_tokens)
        k = req.top_logprobs or 0
        gens = await generate([prompt] * req.n, params_of(req, max_tokens, k))
        for g in gens:
            sampled_by_text[g.text] = list(g.token_ids)
            while len(sampled_by_text) > _REMEMBERED_TURNS:
                sampled_by_text.pop(next(iter(sampled_by_text)))
        choices = []
        for i, g in enumerate(gens):
            logprobs = None
            if req.logprobs:
                content = []
                for j, (t, lp) in enumerate(zip(g.token_ids, g.logprobs, strict=False)):
                    s = token_str(t, req.return_tokens_as_token_ids)
                    top = (g.top_logprobs[j] if g.top_logprobs else {}) if k else {}
                    tops = [
                        {
                            "token": (s2 := token_str(t2, req.return_tokens_as_token_ids)),
                            "logprob": lp2,
                            "bytes": list(s2.encode()),
                        }
                        for t2, lp2 in sorted(top.items(), key=lambda kv: -kv[1])[:k]
                    ]
                    content.append(
                        {"token": s, "logprob": lp, "bytes": list(s.encode()), "top_logprobs": tops}
                    )
                logprobs = {"content": content}
            message = {"role": "assistant", "content": g.text}
            choices.append(
                {
                    "index": i,
                    "message": message,
                    "logprobs": logprobs,
                    "finish_reason": g.finish_reason,
                }
            )
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": choices,
            "usage": _usage(len(prompt), gens),
        }

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest) -> dict[str, Any]:
        check_model(req.model)
        prompts = _prompt_ids(req.prompt, tokenizer)
        if not prompts or any(not p for p in prompts):
            raise APIError(400, "prompt must not be empty")
        max_tokens = 16 if req.max_tokens is None else req.max_tokens
        for p in prompts:
            check_ids(p)
            check_length(len(p), max_tokens)
        k = req.logprobs
        gens = await generate(
            [p for p in prompts for _ in range(req.n)], params_of(req, max_tokens, k or 0)
        )
        # Prompt logprobs are needed for vLLM's prompt_logprobs and for echo with logprobs.
        k_prompt = max(req.prompt_logprobs or 0, k or 0)
        need_prompt = req.prompt_logprobs is not None or (req.echo and k is not None)
        prompt_lps: list[tuple[list[float | None], list[dict[int, float]] | None]] = []
        if need_prompt:
            for p in prompts:
                prompt_lps.append(await batcher.run_model(policy.prompt_logprobs, p, k_prompt))
        as_ids = req.return_tokens_as_token_ids
        choices = []
        for i, g in enumerate(gens):
            pi = i // req.n
            ids = prompts[pi]
            text = g.text
            choice: dict[str, Any] = {"index": i, "finish_reason": g.finish_reason}
            if k is not None:
                tok_ids, tok_lps, tops = list(g.token_ids), list(g.logprobs), g.top_logprobs
                top_list: list[dict[int, float] | None] = (
                    list(tops) if tops else [{} for _ in tok_ids]
                )
                if req.echo:
                    plps, ptops = prompt_lps[pi]
                    tok_ids = ids + tok_ids
                    tok_lps = list(plps) + tok_lps
                    ptop_list = list(ptops) if ptops else [{} for _ in ids]
                    top_list = [d or None for d in ptop_list[: len(ids)]] + top_list
                    top_list[0] = None
                    tok_lps[0] = None
                choice["logprobs"] = _legacy_logprobs(
                    tok_ids, tok_lps, top_list, k, tokenizer, as_ids
                )
            else:
                choice["logprobs"] = None
            if req.echo:
                text = tokenizer.decode(ids) + text
            choice["text"] = text
            if req.prompt_logprobs is not None:
                choice["prompt_logprobs"] = _vllm_prompt_logprobs(
                    ids, prompt_lps[pi], req.prompt_logprobs, tokenizer
                )
            choices.append(choice)
        usage = _usage(sum(len(p) for p in prompts), gens)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": choices,
            "usage": usage,
        }

    @app.post("/tokenize")
    async def tokenize(req: TokenizeRequest) -> dict[str, Any]:
        check_model(req.model)
        if (req.prompt is None) == (req.messages is None):
            raise APIError(400, "send exactly one of `prompt` (text) or `messages` (a chat)")
        if req.messages is not None:
            messages = _to_messages(req.messages)
            if req.add_generation_prompt:
                ids = await batcher.run_model(policy.encode, messages)
            else:
                from mentorgym.agents.chat import encode_chat

                ids = encode_chat(tokenizer, messages, add_generation_prompt=False)
        else:
            ids = tokenizer(req.prompt, add_special_tokens=req.add_special_tokens)["input_ids"]
        strs = tokenizer.convert_ids_to_tokens(ids) if req.return_token_strs else None
        return {
            "count": len(ids),
            "max_model_len": max_model_len,
            "tokens": ids,
            "token_strs": strs,
        }

    @app.post("/detokenize")
    async def detokenize(req: DetokenizeRequest) -> dict[str, Any]:
        check_model(req.model)
        check_ids(req.tokens)
        return {"prompt": tokenizer.decode(req.tokens)}

    return app


@dataclass
class _Empty:
    """The generation of `max_tokens=0` (vLLM allows it with echo): nothing."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] | None = None
    text: str = ""
    finish_reason: str = "length"


def _error(status: int, message: str, kind: str = "BadRequestError") -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return JSONResponse(body, status_code=status)


def _to_messages(messages: list[ChatMessage]) -> list[Message]:
    out: list[Message] = []
    for m in messages:
        if isinstance(m.content, list):
            text = "".join(str(p.get("text", "")) for p in m.content if p.get("type") == "text")
        else:
            text = m.content or ""
        # Tool calls sent in OpenAI's structured form are rendered back into the Hermes
        # text form the envs (and the chat template) use.
        for call in m.tool_calls or []:
            fn = call.get("function", {})
            args = fn.get("arguments", "{}")
            try:
                args = json.loads(args) if isinstance(args, str) else args
            except json.JSONDecodeError:
                pass
            text += (
                "<tool_call>"
                + json.dumps({"name": fn.get("name"), "arguments": args})
                + "</tool_call>"
            )
        role = "system" if m.role == "developer" else m.role
        out.append({"role": role, "content": text})
    return out


def _prompt_ids(
    prompt: str | list[str] | list[int] | list[list[int]], tokenizer: Any
) -> list[list[int]]:
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        return []
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    out = []
    for p in prompt:
        if isinstance(p, str):
            out.append(tokenizer(p, add_special_tokens=True)["input_ids"])
        elif isinstance(p, list) and all(isinstance(t, int) for t in p):
            out.append(list(p))
        else:
            raise APIError(
                400,
                "prompt must be a string, a list of strings, a list of token ids or a list of such lists",
            )
    return out


def _legacy_logprobs(
    ids: list[int],
    lps: list[float | None],
    tops: list[dict[int, float] | None],
    k: int,
    tokenizer: Any,
    as_ids: bool,
) -> dict[str, Any]:
    """OpenAI's legacy completions logprobs: tokens, token_logprobs, top_logprobs, text_offset."""
    tokens = [tokenizer.decode([t]) for t in ids]
    shown = [f"token_id:{t}" for t in ids] if as_ids else tokens
    offsets, pos = [], 0
    for s in tokens:
        offsets.append(pos)
        pos += len(s)
    top_out: list[dict[str, float] | None] = []
    for t, lp, top in zip(ids, lps, tops, strict=False):
        if top is None or lp is None:
            top_out.append(None)
            continue
        best = sorted(top.items(), key=lambda kv: -kv[1])[:k]
        entry = {(f"token_id:{t2}" if as_ids else tokenizer.decode([t2])): lp2 for t2, lp2 in best}
        # OpenAI includes the sampled token beside the top k.
        entry.setdefault(f"token_id:{t}" if as_ids else tokenizer.decode([t]), lp)
        top_out.append(entry)
    return {"tokens": shown, "token_logprobs": lps, "top_logprobs": top_out, "text_offset": offsets}


def _vllm_prompt_logprobs(
    ids: list[int],
    prompt_lps: tuple[list[float | None], list[dict[int, float]] | None],
    k: int,
    tokenizer: Any,
) -> list[dict[str, dict[str, Any]] | None]:
    """vLLM's prompt_logprobs: None for the first token, then {id: {logprob, rank,
    decoded_token}} holding the prompt's own token and the k most likely ones. The rank
    is exact within the top k and null for a token ranked below it (only the top k are
    computed)."""
    lps, tops = prompt_lps
    out: list[dict[str, dict[str, Any]] | None] = [None]
    for pos in range(1, len(ids)):
        lp = lps[pos]
        if lp is None:
            out.append(None)
            continue
        top = (tops[pos] if tops else None) or {}
        best = sorted(top.items(), key=lambda kv: -kv[1])[:k]
        entry: dict[str, dict[str, Any]] = {}
        for rank, (t, l2) in enumerate(best, start=1):
            entry[str(t)] = {"logprob": l2, "rank": rank, "decoded_token": tokenizer.decode([t])}
        t = ids[pos]
        if str(t) not in entry:
            entry[str(t)] = {"logprob": lp, "rank": None, "decoded_token": tokenizer.decode([t])}
        out.append(entry)
    return out


def _usage(prompt_tokens: int, gens: list[Any]) -> dict[str, int]:
    completion = sum(len(g.token_ids) for g in gens)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


class _BearerKey(BaseHTTPMiddleware):
    """Every route needs `Authorization: Bearer KEY` (compared in constant time)."""

    def __init__(self, app: Any, api_key: str):
        super().__init__(app)
        self._key = api_key

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        given = presented_token(request.headers.get("authorization"), None)
        if not token_matches(given, self._key):
            return _error(
                401,
                "missing or wrong API key: send Authorization: Bearer KEY",
                "AuthenticationError",
            )
        return await call_next(request)


# --- running it -------------------------------------------------------------------------------


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

    The served name is `served_model_name`, else the spec (`tiny`) or the path of `hf:PATH`,
    as `vllm serve PATH` does; clients address it as `openai:http://HOST:PORT/v1#NAME`.
    `/v1/models` reports the checkpoint directory as the model's `root`. Without `api_key`
    the server binds only to a loopback address.
    """
    import uvicorn

    from mentorgym.agents.specs import load_policy

    if not api_key and not is_loopback(host):
        raise ConfigError(
            f"serve-model binds {host} only with an API key: pass --api-key KEY (clients send "
            "it from $MENTORGYM_API_KEY or $OPENAI_API_KEY), or bind 127.0.0.1"
        )
    policy = load_policy(spec, **gen_kwargs)
    needed = ("generate", "prompt_logprobs", "encode", "tokenizer")
    if not all(hasattr(policy, a) for a in needed):
        raise ConfigError(
            f"serve-model serves a local model: use `tiny` or `hf:PATH`, not {spec!r} "
            "(for vLLM, run `python -m vllm.entrypoints.openai.api_server --model PATH`)"
        )
    name = served_model_name or (spec[len("hf:") :] if spec.startswith("hf:") else spec)
    app = create_app(policy, name, root=checkpoint_dir(spec), api_key=api_key)  # type: ignore[arg-type]
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def checkpoint_dir(spec: str) -> str | None:
    """The local checkpoint directory a spec loads (absolute), or None for a hub id."""
    from pathlib import Path

    if spec == "tiny":
        from mentorgym.agents.tiny import default_tiny_path

        return str(default_tiny_path())
    from mentorgym.models import is_model_name, resolve_model_path

    if is_model_name(spec.removeprefix("hf:")):  # a named model: its converted checkpoint
        spec = "hf:" + resolve_model_path(spec.removeprefix("hf:"))
    path = Path(spec[len("hf:") :]).expanduser() if spec.startswith("hf:") else None
    return str(path.resolve()) if path is not None and path.is_dir() else None


class BackgroundServer:
    """Serve an app with uvicorn on a thread (tests, notebooks). Use as a context manager;
    `url` is the `/v1` base URL once it has started."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        import socket

        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.host, self.port = host, port
        self.url = f"http://{host}:{port}/v1"
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning")
        )
        self._thread = threading.Thread(
            target=self._server.run, daemon=True, name="mentorgym-server"
        )

    def start(self, timeout_s: float = 30.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the model server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
