"""OpenAI's wire format: the request models, the error body, and the response pieces
(choices, logprobs in the chat and the legacy completions forms, vLLM's prompt_logprobs)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mentorgym.envs.base import Message


class _Request(BaseModel):
    # Unknown fields are ignored, as OpenAI-compatible servers do for clients that send
    # parameters from newer API versions.
    model_config = ConfigDict(extra="ignore")


class SamplingRequest(_Request):
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


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class CompletionRequest(SamplingRequest):
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


@dataclass
class EmptyGeneration:
    """The generation of `max_tokens=0` (vLLM allows it with echo): nothing."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] | None = None
    text: str = ""
    finish_reason: str = "length"


def error_response(status: int, message: str, kind: str = "BadRequestError") -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return JSONResponse(body, status_code=status)


def to_messages(messages: list[ChatMessage]) -> list[Message]:
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


def prompt_ids(
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


def legacy_logprobs(
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


def vllm_prompt_logprobs(
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


def usage(prompt_tokens: int, gens: list[Any]) -> dict[str, int]:
    completion = sum(len(g.token_ids) for g in gens)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


# --- responses ---------------------------------------------------------------------------------


def chat_logprobs(g: Any, k: int, token_str: Callable[[int], str]) -> dict[str, Any]:
    """A chat choice's `logprobs`: each sampled token with its k most likely rivals."""
    content = []
    for j, (t, lp) in enumerate(zip(g.token_ids, g.logprobs, strict=False)):
        s = token_str(t)
        top = (g.top_logprobs[j] if g.top_logprobs else {}) if k else {}
        tops = [
            {"token": (s2 := token_str(t2)), "logprob": lp2, "bytes": list(s2.encode())}
            for t2, lp2 in sorted(top.items(), key=lambda kv: -kv[1])[:k]
        ]
        content.append({"token": s, "logprob": lp, "bytes": list(s.encode()), "top_logprobs": tops})
    return {"content": content}


def chat_response(
    model_name: str,
    gens: list[Any],
    prompt_tokens: int,
    logprobs: bool,
    k: int,
    token_str: Callable[[int], str],
) -> dict[str, Any]:
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": g.text},
            "logprobs": chat_logprobs(g, k, token_str) if logprobs else None,
            "finish_reason": g.finish_reason,
        }
        for i, g in enumerate(gens)
    ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": choices,
        "usage": usage(prompt_tokens, gens),
    }


PromptLogprobs = tuple[list[float | None], list[dict[int, float]] | None]


def completion_choice(
    i: int, g: Any, ids: list[int], req: CompletionRequest, prompt_lp: PromptLogprobs | None,
    tokenizer: Any,
) -> dict[str, Any]:  # fmt: skip
    """One choice of /v1/completions: text (after the prompt with echo), legacy logprobs,
    and vLLM's prompt_logprobs when asked."""
    choice: dict[str, Any] = {"index": i, "finish_reason": g.finish_reason, "logprobs": None}
    if req.logprobs is not None:
        choice["logprobs"] = _completion_logprobs(g, ids, prompt_lp, req, tokenizer)
    choice["text"] = (tokenizer.decode(ids) if req.echo else "") + g.text
    if req.prompt_logprobs is not None:
        assert prompt_lp is not None
        choice["prompt_logprobs"] = vllm_prompt_logprobs(
            ids, prompt_lp, req.prompt_logprobs, tokenizer
        )
    return choice


def _completion_logprobs(
    g: Any, ids: list[int], prompt_lp: PromptLogprobs | None, req: CompletionRequest,
    tokenizer: Any,
) -> dict[str, Any]:  # fmt: skip
    tok_ids, tok_lps, tops = list(g.token_ids), list(g.logprobs), g.top_logprobs
    top_list: list[dict[int, float] | None] = list(tops) if tops else [{} for _ in tok_ids]
    if req.echo:  # the prompt's tokens come first; its first token has no logprob
        assert prompt_lp is not None
        plps, ptops = prompt_lp
        tok_ids = ids + tok_ids
        tok_lps = list(plps) + tok_lps
        ptop_list = list(ptops) if ptops else [{} for _ in ids]
        top_list = [d or None for d in ptop_list[: len(ids)]] + top_list
        top_list[0] = None
        tok_lps[0] = None
    k = req.logprobs or 0
    return legacy_logprobs(tok_ids, tok_lps, top_list, k, tokenizer, req.return_tokens_as_token_ids)


def completion_response(
    model_name: str, choices: list[dict[str, Any]], prompt_tokens: int, gens: list[Any]
) -> dict[str, Any]:
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": choices,
        "usage": usage(prompt_tokens, gens),
    }
