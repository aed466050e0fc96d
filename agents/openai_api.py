"""The `openai:BASE_URL#MODEL` backend: any OpenAI-compatible server as a policy and a teacher.

Acting goes through `/v1/chat/completions` (or `/v1/completions` on token ids when
`use_chat=False`). Scoring a completion the teacher did not write goes through
`/v1/completions` with a prompt of token ids, `echo=true` and vLLM's `prompt_logprobs`
extension, so it needs a server that offers it: `vllm serve` or `mentorgym serve-model`.
The prompt ids come from a local tokenizer (`tokenizer_path`) or the server's `/tokenize`.

Requests run concurrently on a thread pool (the wait is network I/O); transient failures
(429, 5xx, connect errors, timeouts) are retried with exponential backoff and jitter,
honoring `Retry-After`; anything else raises `PolicyError` naming the URL, the status
and the server's own error text.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from mentorgym.agents.base import Action, BatchedPolicy, Scores
from mentorgym.envs.base import Message
from mentorgym.errors import PolicyError

_TOKEN_ID_PREFIX = "token_id:"
_MAX_BACKOFF_S = 30.0


class OpenAIPolicy(BatchedPolicy):
    """A policy (and teacher) served over the OpenAI wire format.

    `vllm_extensions` sends vLLM's `return_tokens_as_token_ids` so actions carry the exact
    sampled ids; turn it off for servers that reject unknown fields (api.openai.com).
    `transport` and `backoff_s` exist for tests and unusual deployments.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_tokens: int = 256,
        stop: list[str] | None = None,
        seed: int | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 16,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        use_chat: bool = True,
        tokenizer_path: str | os.PathLike[str] | None = None,
        vllm_extensions: bool = True,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{base_url}#{model}"
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.stop = list(stop) if stop else None
        # Each request gets its own seed (seed, seed+1, ...): one shared seed would make
        # every episode that shares a prompt sample the same text.
        self._seeds = itertools.count(seed) if seed is not None else None
        self.max_retries = max_retries
        self.use_chat = use_chat
        self.tokenizer_path = Path(tokenizer_path) if tokenizer_path is not None else None
        self.vllm_extensions = vllm_extensions
        self.backoff_s = backoff_s
        headers = {}
        api_key = os.environ.get(api_key_env) if api_key_env else None
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            headers=headers,
            timeout=timeout_s,
            transport=transport,
            limits=httpx.Limits(max_connections=max_concurrency),
        )
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="openai-policy")
        self._tokenizer: Any = None

    # --- the Policy contract -----------------------------------------------------------------

    def act(self, messages: list[Message]) -> Action:
        if self.use_chat:
            return self._act_chat(messages)
        return self._act_completion(messages)

    def act_batch(self, histories: list[list[Message]]) -> list[Action]:
        """One request per history, at most `max_concurrency` in flight at once."""
        return list(self._pool.map(self.act, histories))

    def score(
        self, messages: list[Message], completion_token_ids: list[int], top_k: int = 0
    ) -> Scores:
        """Teacher logprobs of `completion_token_ids` after the chat prompt of `messages`."""
        if not completion_token_ids:
            return Scores(logprobs=[], top_logprobs=[] if top_k > 0 else None)
        prompt_ids = self.encode(messages)
        ids = prompt_ids + list(completion_token_ids)
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": ids,
            # vLLM needs at least one sampled token; it is generated and thrown away.
            "max_tokens": 1,
            "echo": True,
            "prompt_logprobs": max(top_k, 0),
            "temperature": 0.0,
        }
        data = self._post("/completions", body)
        choice = _first_choice(data, self.base_url + "/completions")
        per_position = choice.get("prompt_logprobs")
        if not isinstance(per_position, list) or len(per_position) < len(ids):
            raise PolicyError(
                f"{self.base_url}/completions returned no prompt_logprobs for {len(ids)} prompt "
                "tokens; scoring needs a server with vLLM's prompt_logprobs extension "
                "(`vllm serve` or `mentorgym serve-model`)"
            )
        logprobs: list[float] = []
        tops: list[dict[int, float]] = []
        for pos, token_id in enumerate(completion_token_ids, start=len(prompt_ids)):
            entry = per_position[pos] or {}
            table = {int(k): float(v["logprob"]) for k, v in entry.items()}
            if token_id not in table:
                raise PolicyError(
                    f"{self.base_url}/completions: prompt_logprobs at position {pos} lack the "
                    f"prompt's own token {token_id}"
                )
            logprobs.append(table[token_id])
            if top_k > 0:
                # The dict holds the top k plus the actual token when it ranks below k;
                # the k largest logprobs are the top k either way.
                best = sorted(table.items(), key=lambda kv: kv[1], reverse=True)[:top_k]
                tops.append(dict(best))
        return Scores(logprobs=logprobs, top_logprobs=tops if top_k > 0 else None)

    def encode(self, messages: list[Message]) -> list[int]:
        """The teacher's prompt ids for `messages`, ending with the assistant header."""
        if self.tokenizer_path is not None:
            from mentorgym.agents.chat import encode_chat

            return encode_chat(self._local_tokenizer(), messages, add_generation_prompt=True)
        body = {"model": self.model, "messages": list(messages), "add_generation_prompt": True}
        try:
            data = self._post("/tokenize", body, root=True)
        except PolicyError as e:
            raise PolicyError(
                f"{e}\nscoring needs the teacher's tokenizer: pass tokenizer_path=DIR (a local "
                "Hugging Face tokenizer) or use a server with POST /tokenize (vLLM, mentorgym)"
            ) from e
        tokens = data.get("tokens")
        if not isinstance(tokens, list):
            raise PolicyError(f"{self._root_url()}/tokenize answered without a `tokens` list")
        return [int(t) for t in tokens]

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._http.close()

    # --- requests ----------------------------------------------------------------------------

    def _sampling(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
        }
        if self.stop:
            body["stop"] = self.stop
        if self._seeds is not None:
            body["seed"] = next(self._seeds)
        if self.vllm_extensions:
            body["return_tokens_as_token_ids"] = True
        return body

    def _act_chat(self, messages: list[Message]) -> Action:
        body = {**self._sampling(), "messages": list(messages), "logprobs": True}
        data = self._post("/chat/completions", body)
        choice = _first_choice(data, self.base_url + "/chat/completions")
        text = (choice.get("message") or {}).get("content") or ""
        content = (choice.get("logprobs") or {}).get("content")
        token_ids, logprobs = None, None
        if isinstance(content, list):
            logprobs = [float(c["logprob"]) for c in content]
            token_ids = _token_ids([c.get("token", "") for c in content])
        meta = {"finish_reason": choice.get("finish_reason"), "usage": data.get("usage")}
        return Action(text=text, token_ids=token_ids, logprobs=logprobs, meta=meta)

    def _act_completion(self, messages: list[Message]) -> Action:
        body = {**self._sampling(), "prompt": self.encode(messages), "logprobs": 0}
        data = self._post("/completions", body)
        choice = _first_choice(data, self.base_url + "/completions")
        lp = choice.get("logprobs") or {}
        token_ids, logprobs = None, None
        if isinstance(lp.get("token_logprobs"), list):
            logprobs = [float(x) for x in lp["token_logprobs"]]
            token_ids = _token_ids(lp.get("tokens") or [])
        meta = {"finish_reason": choice.get("finish_reason"), "usage": data.get("usage")}
        return Action(
            text=choice.get("text") or "", token_ids=token_ids, logprobs=logprobs, meta=meta
        )

    def _root_url(self) -> str:
        # vLLM serves /tokenize beside /v1, not under it.
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    def _post(self, path: str, body: dict[str, Any], *, root: bool = False) -> dict[str, Any]:
        url = (self._root_url() if root else self.base_url) + path
        last = ""
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            try:
                r = self._http.post(url, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if r.status_code < 400:
                    try:
                        return r.json()
                    except ValueError as e:
                        raise PolicyError(
                            f"{url} answered {r.status_code} with non-JSON: {r.text[:300]!r}"
                        ) from e
                last = f"HTTP {r.status_code}: {_error_text(r)}"
                if r.status_code != 429 and r.status_code < 500:
                    raise PolicyError(f"{url} answered {last}")
                retry_after = _retry_after(r)
            if attempt == self.max_retries:
                break
            delay = min(_MAX_BACKOFF_S, self.backoff_s * 2**attempt) * (0.5 + random.random())
            time.sleep(retry_after if retry_after is not None else delay)
        raise PolicyError(
            f"{url} failed after {self.max_retries + 1} tries; last error: {last}. "
            "Check that the server is up and not overloaded, or raise max_retries/timeout_s."
        )

    def _local_tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer_path))
            except (OSError, ValueError) as e:
                raise PolicyError(f"cannot load a tokenizer from {self.tokenizer_path}: {e}") from e
        return self._tokenizer


def _first_choice(data: dict[str, Any], url: str) -> dict[str, Any]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise PolicyError(f"{url} answered without choices: {str(data)[:300]}")
    return choices[0]


def _token_ids(tokens: list[str]) -> list[int] | None:
    """Ids from vLLM's `token_id:N` strings; None when the server sent plain token text."""
    if not all(isinstance(t, str) and t.startswith(_TOKEN_ID_PREFIX) for t in tokens):
        return None
    try:
        return [int(t[len(_TOKEN_ID_PREFIX) :]) for t in tokens]
    except ValueError:
        return None


def _error_text(r: httpx.Response) -> str:
    try:
        data = r.json()
    except ValueError:
        return r.text[:500]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
        if "message" in data:
            return str(data["message"])[:500]
        if "detail" in data:
            return str(data["detail"])[:500]
    return str(data)[:500]


def _retry_after(r: httpx.Response) -> float | None:
    value = r.headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), _MAX_BACKOFF_S)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
