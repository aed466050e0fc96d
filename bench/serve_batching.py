"""Throughput of `mentorgym serve-model`'s request batching against one request at a time.

Serves the tiny model twice in this process (same weights): once with the batcher
(requests within 5 ms, or arriving while the model is busy, share one `generate`) and once
with `max_batch=1` (every request is its own `generate`), then sends the same N
concurrent chat requests to each through the `openai:` backend and prints both rates and
their ratio.

    python bench/serve_batching.py [--n 16] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import time

from mentorgym.agents.hf import HFPolicy
from mentorgym.agents.openai_api import OpenAIPolicy
from mentorgym.agents.tiny import default_tiny_path
from mentorgym.model_server import BackgroundServer, create_app


def requests_per_s(policy: HFPolicy, n: int, max_tokens: int, max_batch: int) -> tuple[float, int]:
    app = create_app(policy, "tiny", max_batch=max_batch)
    histories = [[{"role": "user", "content": f"Puzzle {i}: what is {i} + {i}?"}] for i in range(n)]
    with BackgroundServer(app) as srv:
        remote = OpenAIPolicy(srv.url, "tiny", max_tokens=max_tokens, max_concurrency=n, seed=0)
        remote.act_batch(histories[:2])  # warm up
        calls0 = app.state.batcher.generate_calls
        t0 = time.perf_counter()
        remote.act_batch(histories)
        dt = time.perf_counter() - t0
    return n / dt, app.state.batcher.generate_calls - calls0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()
    # The same max_tokens with no early stop: both runs do the same work per request.
    policy = HFPolicy(str(default_tiny_path()), device="cpu")
    policy.eos_ids = set()
    batched, calls_b = requests_per_s(policy, args.n, args.max_tokens, max_batch=64)
    single, calls_s = requests_per_s(policy, args.n, args.max_tokens, max_batch=1)
    print(f"{args.n} concurrent requests x {args.max_tokens} tokens, tiny model")
    print(f"batched:  {batched:7.2f} req/s  ({calls_b} generate calls)")
    print(f"one each: {single:7.2f} req/s  ({calls_s} generate calls)")
    print(f"ratio batched / one-at-a-time: {batched / single:.2f}x")


if __name__ == "__main__":
    main()
