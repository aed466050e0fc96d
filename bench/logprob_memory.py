"""Working memory of the sampled-token logprobs the on-policy trainers take (forward and
backward through `onpolicy.logprobs_from_hidden`): the chunked, checkpointed default against
the whole B x L x V block at once, on Qwen3's vocabulary.

Each mode runs in a fresh process; working memory is the peak RSS minus the RSS once the
hidden states and the LM head exist. Values and gradients must agree.

    python bench/logprob_memory.py                       # 4096 positions, H=1024, V=151936
    python bench/logprob_memory.py --positions 8192 --chunk 1024
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def child(mode: str, positions: int, hidden: int, vocab: int, chunk: int) -> dict:
    import torch

    from mentorgym.training import scoring

    torch.manual_seed(0)
    head = torch.nn.Linear(hidden, vocab, bias=False)
    head.weight.data.normal_().mul_(0.02)
    model = torch.nn.Module()
    model.get_output_embeddings = lambda: head
    h = torch.empty(1, positions, hidden).normal_().requires_grad_(True)
    target = torch.randint(0, vocab, (1, positions))
    base = _rss()
    t0 = time.perf_counter()
    lp = scoring.logprobs_from_hidden(
        model, h, target, 1.0, chunk=chunk if mode == "chunked" else positions
    )
    lp.sum().backward()
    took = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "mode": mode,
        "positions": positions,
        "vocab": vocab,
        "chunk": chunk if mode == "chunked" else positions,
        "working_gb": round((peak - base) / 1e9, 3),
        "seconds": round(took, 2),
        "value": float(lp.sum()),
        "grad_norm": float(h.grad.norm()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", nargs=5)
    p.add_argument("--positions", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--chunk", type=int, default=1024)
    args = p.parse_args()
    if args.child:
        m, *nums = args.child
        print(json.dumps(child(m, *map(int, nums))))
        return
    rows = []
    for mode in ("whole", "chunked"):
        cmd = [sys.executable, __file__, "--child", mode]
        cmd += [str(x) for x in (args.positions, args.hidden, args.vocab, args.chunk)]
        rows.append(
            json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        )
        print(json.dumps(rows[-1]), flush=True)
    whole, chunked = rows
    rel = abs(whole["value"] - chunked["value"]) / abs(whole["value"])
    grad_rel = abs(whole["grad_norm"] - chunked["grad_norm"]) / whole["grad_norm"]
    print(
        f"chunked / whole: working memory {chunked['working_gb'] / whole['working_gb']:.2f}x, "
        f"time {chunked['seconds'] / whole['seconds']:.2f}x; value rel. diff {rel:.1e}, "
        f"grad-norm rel. diff {grad_rel:.1e}"
    )


if __name__ == "__main__":
    main()
