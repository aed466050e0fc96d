"""The model service: what each OpenAI route does, with no HTTP in it.

`ModelService` holds the policy, its batcher and tokenizer, and answers parsed requests with
response dicts (or raises `APIError`); `app.py` only routes requests to it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from mentorgym.envs.base import Message
from mentorgym.model_server.batcher import Batcher, GenerativeModel, GenParams
from mentorgym.model_server.openai_format import (
    APIError,
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmptyGeneration,
    SamplingRequest,
    TokenizeRequest,
    chat_response,
    completion_choice,
    completion_response,
    prompt_ids,
    to_messages,
)

_REMEMBERED_TURNS = 4096


class ModelService:
    """One served model: checks, sampling parameters, and the five routes' answers."""

    def __init__(
        self,
        policy: GenerativeModel,
        model_name: str,
        batcher: Batcher,
        *,
        default_max_tokens: int = 256,
        root: str | None = None,
    ):
        self.policy, self.model_name, self.batcher = policy, model_name, batcher
        self.tokenizer = policy.tokenizer
        self.vocab_size = len(self.tokenizer)
        config = getattr(getattr(policy, "model", None), "config", None)
        self.max_model_len = int(getattr(config, "max_position_embeddings", 0) or 0) or None
        self.default_max_tokens = default_max_tokens
        self.root = root
        self.created = int(time.time())
        # Assistant turns this server sampled, by text: a chat client sends back only text,
        # so the chat route re-encodes a turn it wrote as the ids it sampled (a text written
        # twice with different ids keeps the latest; clients that know their ids send token
        # ids to /v1/completions instead, as the `openai:` backend does).
        self.sampled_by_text: dict[str, list[int]] = {}

    # checks ------------------------------------------------------------------------------

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(
                404,
                f"The model `{name}` does not exist. Available models: {self.model_name}",
                "NotFoundError",
            )

    def check_ids(self, ids: list[int]) -> None:
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise APIError(
                400, f"token ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})"
            )

    def check_length(self, n_prompt: int, max_tokens: int) -> None:
        if self.max_model_len is not None and n_prompt + max_tokens > self.max_model_len:
            raise APIError(
                400,
                f"This model's maximum context length is {self.max_model_len} tokens. However, "
                f"you requested {n_prompt + max_tokens} tokens ({n_prompt} in the prompt, "
                f"{max_tokens} in the completion). Reduce the prompt or max_tokens.",
            )

    # generation --------------------------------------------------------------------------

    @staticmethod
    def params_of(req: SamplingRequest, max_tokens: int, top_logprobs: int) -> GenParams:
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

    async def generate(self, prompts: list[list[int]], params: GenParams) -> list[Any]:
        if params.max_new_tokens == 0:
            return [EmptyGeneration() for _ in prompts]
        try:
            return await self.batcher.generate(prompts, params)
        except Exception as e:
            raise APIError(
                500, f"generation failed: {type(e).__name__}: {e}", "InternalServerError"
            ) from e

    def token_str(self, token_id: int, as_ids: bool) -> str:
        return f"token_id:{token_id}" if as_ids else self.tokenizer.decode([token_id])

    def encode_chat(self, messages: list[Message]) -> list[int]:
        """The chat's prompt ids, with the ids this server sampled for its own past turns."""
        sampled = getattr(self.policy, "sampled", None)
        if sampled is None:
            return self.policy.encode(messages)
        key = f"chat-request-{uuid.uuid4().hex}"
        turn = 0
        for m in messages:
            if m["role"] == "assistant":
                ids = self.sampled_by_text.get(m["content"])
                if ids is not None:
                    sampled.remember(key, turn, m["content"], ids)
                turn += 1
        try:
            return self.policy.encode(messages, episode=key)  # type: ignore[call-arg]
        finally:
            sampled.forget(key)

    def remember(self, gens: list[Any]) -> None:
        for g in gens:
            self.sampled_by_text[g.text] = list(g.token_ids)
        while len(self.sampled_by_text) > _REMEMBERED_TURNS:
            self.sampled_by_text.pop(next(iter(self.sampled_by_text)))

    # the routes --------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        card = {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "mentorgym",
        }
        card |= {"root": self.root or self.model_name, "max_model_len": self.max_model_len}
        return {"object": "list", "data": [card]}

    async def chat(self, req: ChatRequest) -> dict[str, Any]:
        self.check_model(req.model)
        if req.top_logprobs and not req.logprobs:
            raise APIError(400, "top_logprobs needs logprobs=true")
        max_tokens = req.max_completion_tokens or req.max_tokens
        max_tokens = self.default_max_tokens if max_tokens is None else max_tokens
        prompt = await self.batcher.run_model(self.encode_chat, to_messages(req.messages))
        self.check_length(len(prompt), max_tokens)
        k = req.top_logprobs or 0
        gens = await self.generate([prompt] * req.n, self.params_of(req, max_tokens, k))
        self.remember(gens)
        as_ids = req.return_tokens_as_token_ids
        return chat_response(
            self.model_name, gens, len(prompt), req.logprobs, k, lambda t: self.token_str(t, as_ids)
        )

    async def completions(self, req: CompletionRequest) -> dict[str, Any]:
        self.check_model(req.model)
        prompts = prompt_ids(req.prompt, self.tokenizer)
        if not prompts or any(not p for p in prompts):
            raise APIError(400, "prompt must not be empty")
        max_tokens = 16 if req.max_tokens is None else req.max_tokens
        for p in prompts:
            self.check_ids(p)
            self.check_length(len(p), max_tokens)
        k = req.logprobs
        params = self.params_of(req, max_tokens, k or 0)
        gens = await self.generate([p for p in prompts for _ in range(req.n)], params)
        # Prompt logprobs are needed for vLLM's prompt_logprobs and for echo with logprobs.
        prompt_lps = None
        if req.prompt_logprobs is not None or (req.echo and k is not None):
            k_prompt = max(req.prompt_logprobs or 0, k or 0)
            run = self.batcher.run_model
            prompt_lps = [await run(self.policy.prompt_logprobs, p, k_prompt) for p in prompts]
        choices = [
            completion_choice(
                i,
                g,
                prompts[i // req.n],
                req,
                prompt_lps[i // req.n] if prompt_lps else None,
                self.tokenizer,
            )  # fmt: skip
            for i, g in enumerate(gens)
        ]
        return completion_response(self.model_name, choices, sum(map(len, prompts)), gens)

    async def tokenize(self, req: TokenizeRequest) -> dict[str, Any]:
        self.check_model(req.model)
        if (req.prompt is None) == (req.messages is None):
            raise APIError(400, "send exactly one of `prompt` (text) or `messages` (a chat)")
        if req.messages is not None:
            messages = to_messages(req.messages)
            if req.add_generation_prompt:
                ids = await self.batcher.run_model(self.policy.encode, messages)
            else:
                from mentorgym.agents.chat import encode_chat

                ids = encode_chat(self.tokenizer, messages, add_generation_prompt=False)
        else:
            ids = self.tokenizer(req.prompt, add_special_tokens=req.add_special_tokens)
            ids = ids["input_ids"]
        strs = self.tokenizer.convert_ids_to_tokens(ids) if req.return_token_strs else None
        return {"count": len(ids), "max_model_len": self.max_model_len, "tokens": ids,
                "token_strs": strs}  # fmt: skip

    def detokenize(self, req: DetokenizeRequest) -> dict[str, Any]:
        self.check_model(req.model)
        self.check_ids(req.tokens)
        return {"prompt": self.tokenizer.decode(req.tokens)}
