"""GPU check of the `vllm:` backend (needs a CUDA GPU and `pip install 'mentorgym[vllm]'`).

Builds the `small` random Qwen3 model with the project's tokenizer in a temp dir, loads it
with `VLLMPolicy`, and checks:
  1. act_batch returns text, token ids and one finite logprob per id, for every history;
  2. score() of the sampled ids gives back the sampling logprobs (same model, same
     tokens; only numerics differ), printed as the max absolute difference;
  3. score(top_k=5) returns 5 ids per position, the actual id's logprob is <= the best;
  4. the same scores from the `hf:` backend on the same weights (max abs difference).

    python bench/gpu_check_vllm.py [--size small] [--n 8]

Prints one JSON line of results and exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small")
    ap.add_argument("--n", type=int, default=8)
    args = ap.parse_args()

    from mentorgym.agents.tiny import build_tiny
    from mentorgym.agents.vllm_engine import VLLMPolicy

    failures: list[str] = []
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny(Path(tmp) / "model", size=args.size)
        t0 = time.perf_counter()
        policy = VLLMPolicy(
            str(path),
            temperature=1.0,
            max_tokens=32,
            seed=0,
            gpu_memory_utilization=0.3,
            dtype="float32",
            enforce_eager=True,
        )
        out["load_s"] = round(time.perf_counter() - t0, 2)
        histories = [
            [{"role": "user", "content": f"What is {i} + {i}? Answer in <answer></answer>."}]
            for i in range(args.n)
        ]
        t0 = time.perf_counter()
        actions = policy.act_batch(histories)
        out["act_batch_s"] = round(time.perf_counter() - t0, 3)
        for i, a in enumerate(actions):
            if not a.token_ids or a.logprobs is None or len(a.logprobs) != len(a.token_ids):
                failures.append(f"action {i}: ids/logprobs missing or unequal: {a}")
            elif not all(math.isfinite(x) and x <= 0 for x in a.logprobs):
                failures.append(f"action {i}: bad logprobs {a.logprobs[:5]}")
        diffs = []
        for h, a in zip(histories, actions, strict=False):
            if a.token_ids:
                s = policy.score(h, a.token_ids)
                diffs += [abs(x - y) for x, y in zip(s.logprobs, a.logprobs or [], strict=False)]
        out["score_vs_sample_max_abs"] = max(diffs) if diffs else None
        if not diffs or max(diffs) > 1e-2:
            failures.append(
                f"score() disagrees with sampling logprobs: {out['score_vs_sample_max_abs']}"
            )
        a0 = actions[0]
        s5 = policy.score(histories[0], a0.token_ids or [], top_k=5)
        if s5.top_logprobs is None or any(len(d) != 5 for d in s5.top_logprobs):
            failures.append("score(top_k=5) did not return 5 entries per position")
        elif any(
            lp > max(d.values()) + 1e-6 for lp, d in zip(s5.logprobs, s5.top_logprobs, strict=False)
        ):
            failures.append("an actual token's logprob exceeds the top-1 logprob")
        try:
            from mentorgym.agents.hf import HFPolicy

            hf = HFPolicy(str(path), device="cuda")
            hs = hf.score(histories[0], a0.token_ids or [])
            d = max(abs(x - y) for x, y in zip(hs.logprobs, s5.logprobs, strict=False))
            out["vllm_vs_hf_score_max_abs"] = d
            if d > 1e-2:
                failures.append(f"vLLM and hf: scores differ by {d}")
        except ImportError as e:
            out["vllm_vs_hf_score_max_abs"] = f"skipped: {e}"
    out["failures"] = failures
    print(json.dumps(out))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
