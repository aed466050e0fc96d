"""The `openai:BASE_URL#MODEL` backend: any OpenAI-compatible server as a policy and a teacher.

The policy card applies here as in `hf:` and `vllm:`: with no card given, the backend asks
`GET /v1/models` for the model's `root`; when that is a local directory (vLLM and
`mentorgym serve-model` report the checkpoint path), its `mentorgym_policy.json` sets the
context window, the system prompt and the sampling settings, and its tokenizer encodes
prompts. `card=DIR` names the card (and tokenizer) directly; explicit arguments override
both. With a local tokenizer, acting goes through `/v1/completions` on the prompt's token
ids, encoded exactly as `hf:` encodes them (earlier turns as their sampled ids), so a
served policy sees the tokens it was trained on; without one, through
`/v1/chat/completions` on the windowed messages. Where `/v1/models` reports
`max_model_len`, `max_tokens` is capped to what the prompt leaves of it.

Scoring a completion the teacher did not write goes through `/v1/completions` with a
prompt of token ids, `echo=true` and vLLM's `prompt_logprobs` extension, so it needs a
server that offers it: `vllm serve` or `mentorgym serve-model`. The prompt ids come from
the local tokenizer or the server's `/tokenize`.

Authentication: the key is read from `$MENTORGYM_API_KEY`, else `$OPENAI_API_KEY` (or the
variable `api_key_env` names) and sent as `Authorization: Bearer KEY`.

Requests run concurrently on a thread pool (the wait is network I/O; `submit` returns a
future per request, which the asynchronous rollout engine waits on); transient failures
(429, 5xx, connect errors, timeouts) are retried with exponential backoff and jitter,
honoring `Retry-After`. Any other 4xx raises `RequestError` (a `PolicyError`) naming the
URL, the status and the server's own error text, and the rollout engine ends that episode
only; 401, 403 and 404 (a wrong key, URL or model name) raise `PolicyError` and stop the run.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from mentorgym.agents.base import Action, Scores
from mentorgym.agents.card import PolicyCard, card_for, first, merge_card
from mentorgym.agents.chat import (
    SampledTurns,
    assistant_turns,
    completion_text,
    encode_view,
    window_messages,
)
from mentorgym.agents.seeding import request_seed
from mentorgym.agents.turn_futures import SubmittingPolicy
from mentorgym.envs.base import Message
from mentorgym.errors import PolicyError, RequestError

log = logging.getLogger(__name__)

_TOKEN_ID_PREFIX = "token_id:"
_MAX_BACKOFF_S = 30.0
API_KEY_ENVS = ("MENTORGYM_API_KEY", "OPENAI_API_KEY")
"""Where the key is read from, first set wins (unless `api_key_env` names another)."""


class OpenAIPolicy(SubmittingPolicy):
    """A policy (and teacher) served over the OpenAI wire format.

    `vllm_extensions` sends vLLM's `return_tokens_as_token_ids` so actions carry the exact
    sampled ids; turn it off for servers that reject unknown fields (api.openai.com).
    `discover=False` skips the `/v1/models` lookup of the card and the context window.
    `transport` and `backoff_s` exist for tests and unusual deployments.
    """

    takes_episode_keys = True

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
        card: str | os.PathLike[str] | None = None,
        context_turns: int | None = None,
        system_prompt: bool | None = None,
        api_key_env: str | None = None,
        max_concurrency: int = 16,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        use_chat: bool | None = None,
        tokenizer_path: str | os.PathLike[str] | None = None,
        vllm_extensions: bool = True,
        discover: bool = True,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{base_url}#{model}"
        self._explicit = {
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "stop": stop,
            "context_turns": context_turns,
            "system_prompt": system_prompt,
            "use_chat": use_chat,
            "tokenizer_path": tokenizer_path,
        }
        self.card_path = Path(card) if card is not None else None
        self.context_window: int | None = None
        self._apply_card(card_for(self.card_path), self.card_path)
        self.seed = seed
        # Requests without a turn seed get seed, seed+1, ...: one shared seed would make
        # every episode that shares a prompt sample the same text.
        self._seeds = itertools.count(seed) if seed is not None else None
        self.max_retries = max_retries
        self.vllm_extensions = vllm_extensions
        self.backoff_s = backoff_s
        self.sampled = SampledTurns()
        headers = {}
        api_key = _api_key(api_key_env)
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
        self._discover = discover and self.card_path is None
        self._setup_lock = threading.Lock()
        self._ready = not discover

    def _apply_card(self, card: PolicyCard, card_dir: Path | None) -> None:
        x = self._explicit
        s = merge_card(
            card, temperature=x["temperature"], top_p=x["top_p"], stop=x["stop"],
            max_new_tokens=x["max_tokens"], context_turns=x["context_turns"],
            system_prompt=x["system_prompt"],
        )  # fmt: skip
        self.temperature, self.top_p, self.max_tokens = s.temperature, s.top_p, s.max_new_tokens
        self.stop, self.context_turns, self.system_prompt = s.stop, s.context_turns, s.system_prompt
        has_tokenizer = card_dir is not None and (card_dir / "tokenizer_config.json").is_file()
        tok = first(x["tokenizer_path"], card_dir if has_tokenizer else None)
        self.tokenizer_path = Path(tok) if tok is not None else None
        # With the model's own tokenizer, prompts are token ids encoded as `hf:` does.
        self.use_chat = first(x["use_chat"], self.tokenizer_path is None)

    def _setup(self) -> None:
        """Once: read the model's `root` and `max_model_len` from `/v1/models`, and the card
        from the root when it is a local directory."""
        if self._ready:
            return
        with self._setup_lock:
            if self._ready:
                return
            entry = self._model_entry()
            window = entry.get("max_model_len")
            self.context_window = int(window) if isinstance(window, int) and window > 0 else None
            root = entry.get("root")
            if self._discover and isinstance(root, str) and Path(root).is_dir():
                self._apply_card(card_for(root), Path(root))
                log.info("%s: policy card and tokenizer from %s", self.name, root)
            self._ready = True

    def _model_entry(self) -> dict[str, Any]:
        try:
            r = self._http.get(self.base_url + "/models")
            data = r.json() if r.status_code < 400 else {}
        except (httpx.HTTPError, ValueError) as e:
            log.warning("%s: GET /models failed (%s); using defaults", self.name, e)
            return {}
        for entry in data.get("data") or []:
            if isinstance(entry, dict) and entry.get("id") == self.model:
                return entry
        return {}

    # --- the Policy contract -----------------------------------------------------------------

    def act(self, messages: list[Message]) -> Action:
        action = self._act(messages, None)
        if isinstance(action, RequestError):
            raise action
        return action

    def submit(
        self, history: list[Message], episode: str | None = None, seed: int | None = None
    ) -> Future[Any]:
        """One request on the pool; the future holds an `Action` or the `RequestError`.
        `seed` is the rollout engine's turn seed: with a run seed, the request's `seed`
        field is a function of (run seed, episode, turn), not of the arrival order."""
        return self._pool.submit(self._act, list(history), episode, seed)

    def _act(
        self, messages: list[Message], episode: str | None, turn: int | None = None
    ) -> Action | RequestError:
        self._setup()
        seed = self._request_seed(turn)
        try:
            if self.use_chat:
                return self._act_chat(messages, seed)
            return self._act_completion(messages, episode, seed)
        except RequestError as e:
            return e

    def score(
        self, messages: list[Message], completion_token_ids: list[int], top_k: int = 0
    ) -> Scores:
        """Teacher logprobs of `completion_token_ids` after the chat prompt of `messages`."""
        if not completion_token_ids:
            return Scores(logprobs=[], top_logprobs=[] if top_k > 0 else None)
        self._setup()
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

    def encode(self, messages: list[Message], episode: str | None = None) -> list[int]:
        """The prompt ids of what the policy sees of `messages`, ending with the assistant
        header: encoded locally as `hf:` does when a tokenizer is known, else by the
        server's `/tokenize` on the windowed messages."""
        self._setup()
        if self.tokenizer_path is not None:
            return encode_view(
                self._local_tokenizer(),
                messages,
                context_turns=self.context_turns,
                system_prompt=self.system_prompt,
                sampled=self.sampled,
                episode=episode,
            )
        body = {
            "model": self.model,
            "messages": self._view(messages),
            "add_generation_prompt": True,
        }
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

    def _view(self, messages: list[Message]) -> list[Message]:
        return window_messages(list(messages), self.context_turns, self.system_prompt)

    def _request_seed(self, turn: int | None) -> int | None:
        if self.seed is not None and turn is not None:
            return request_seed(self.seed, turn)
        return None if self._seeds is None else next(self._seeds)

    def _sampling(self, max_tokens: int, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": max_tokens,
        }
        if self.stop:
            body["stop"] = self.stop
        if seed is not None:
            body["seed"] = seed
        if self.vllm_extensions:
            body["return_tokens_as_token_ids"] = True
        return body

    def _budget(self, prompt_tokens: int | None) -> int:
        """`max_tokens`, capped to what the prompt leaves of the context window."""
        if self.context_window is None or prompt_tokens is None:
            return self.max_tokens
        left = self.context_window - prompt_tokens
        if left <= 0:
            raise RequestError(
                f"{self.name}: the prompt ({prompt_tokens} tokens) fills the model's context "
                f"window ({self.context_window} tokens); shorten the history (a policy card's "
                "context_turns) or serve a model with a longer window"
            )
        return min(self.max_tokens, left)

    def _act_chat(self, messages: list[Message], seed: int | None) -> Action:
        # The prompt's length is known only from the server; a request past the window is
        # answered 400 and ends its episode.
        body = {**self._sampling(self.max_tokens, seed), "messages": self._view(messages)}
        body["logprobs"] = True
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

    def _act_completion(
        self, messages: list[Message], episode: str | None, seed: int | None
    ) -> Action:
        prompt = self.encode(messages, episode)
        body = {**self._sampling(self._budget(len(prompt)), seed), "prompt": prompt, "logprobs": 0}
        data = self._post("/completions", body)
        choice = _first_choice(data, self.base_url + "/completions")
        lp = choice.get("logprobs") or {}
        token_ids, logprobs = None, None
        if isinstance(lp.get("token_logprobs"), list):
            logprobs = [float(x) for x in lp["token_logprobs"]]
            token_ids = _token_ids(lp.get("tokens") or [])
        text = choice.get("text") or ""
        finish = choice.get("finish_reason")
        if token_ids is not None and logprobs is not None and self.tokenizer_path is not None:
            text, token_ids, stopped = completion_text(
                self._local_tokenizer(), token_ids, self.stop
            )
            logprobs = logprobs[: len(token_ids)]
            finish = "stop" if stopped else finish
        if episode is not None and token_ids is not None:
            self.sampled.remember(episode, assistant_turns(messages), text, token_ids)
        meta = {"finish_reason": finish, "usage": data.get("usage"), "prompt_tokens": len(prompt)}
        return Action(text=text, token_ids=token_ids, logprobs=logprobs, meta=meta)

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
                if r.status_code in (401, 403, 404):  # the setup is wrong, not this request
                    raise PolicyError(f"{url} answered {last}")
                if r.status_code != 429 and r.status_code < 500:
                    raise RequestError(f"{url} answered {last}")
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
        # Once, under the lock: the request pool's threads all ask at the first turn, and
        # transformers' lazy module fails an import that races with another thread's.
        if self._tokenizer is None:
            with self._setup_lock:
                if self._tokenizer is None:
                    from transformers import AutoTokenizer

                    try:
                        path = str(self.tokenizer_path)
                        self._tokenizer = AutoTokenizer.from_pretrained(path)
                    except (OSError, ValueError) as e:
                        raise PolicyError(f"cannot load a tokenizer from {path}: {e}") from e
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


def _api_key(env: str | None) -> str | None:
    for name in (env,) if env else API_KEY_ENVS:
        value = os.environ.get(name)
        if value:
            return value
    return None
