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

Inside: `batcher.py` (requests that arrive together share one `generate`),
`openai_format.py` (request models, error body, response pieces), `service.py` (what each
route answers, no HTTP), `app.py` (the routes), `serving.py` (`serve_model`).
"""

from __future__ import annotations

from mentorgym.model_server.app import create_app
from mentorgym.model_server.batcher import Batcher, GenerativeModel, GenParams
from mentorgym.model_server.openai_format import APIError
from mentorgym.model_server.service import ModelService
from mentorgym.model_server.serving import (
    BackgroundServer,
    checkpoint_dir,
    load_served_policy,
    serve_model,
)

__all__ = [
    "APIError",
    "BackgroundServer",
    "Batcher",
    "GenParams",
    "GenerativeModel",
    "ModelService",
    "checkpoint_dir",
    "create_app",
    "load_served_policy",
    "serve_model",
]
