"""HFPolicy.generate throughput against its peers, measured in the same run.

    python bench/bench_hf_generate.py [--model DIR] [--batch 32] [--new 32] [--device cpu]

Compares, on the same prompts with greedy decoding: HFPolicy's batched KV-cache loop;
the same loop called one prompt at a time; a batched loop without a KV cache (re-runs the
whole sequence per token); and transformers' own `model.generate` (left-padded batch).
Prints generated tokens per second and each peer's time as a ratio of HFPolicy's batch.
Without --model it builds the tiny model in a temporary directory.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import torch

from mentorgym.agents.hf import HFPolicy
from mentorgym.agents.tiny import build_tiny

GRID = "#######\n#  .  #\n# $@  #\n#     #\n#######"


def prompts_for(policy: HFPolicy, n: int) -> list[list[int]]:
    out = []
    for i in range(n):
        msgs = [
            {"role": "system", "content": "You play Sokoban. Answer with <answer>MOVE</answer>."},
            {"role": "user", "content": GRID + f"\nStep {i}." + " Think." * (i % 7)},
        ]
        out.append(policy.encode(msgs))
    return out


def no_cache_loop(policy: HFPolicy, prompts: list[list[int]], new: int) -> list[list[int]]:
    """Greedy, batched, left-padded, but the full sequence is re-run for every token."""
    B, L = len(prompts), max(len(p) for p in prompts)
    ids_BT = torch.full((B, L), policy.pad_id, dtype=torch.long)
    attn_BT = torch.zeros((B, L), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids_BT[b, L - len(p) :] = torch.tensor(p)
        attn_BT[b, L - len(p) :] = 1
    ids_BT, attn_BT = ids_BT.to(policy.device), attn_BT.to(policy.device)
    with torch.no_grad():
        for _ in range(new):
            pos_BT = (attn_BT.cumsum(-1) - 1).clamp(min=0)
            logits = policy.model(
                input_ids=ids_BT, attention_mask=attn_BT, position_ids=pos_BT
            ).logits
            nxt_B1 = logits[:, -1].argmax(-1, keepdim=True)
            ids_BT = torch.cat([ids_BT, nxt_B1], 1)
            attn_BT = torch.cat([attn_BT, torch.ones_like(nxt_B1)], 1)
    return ids_BT[:, L:].tolist()


def hf_generate(policy: HFPolicy, prompts: list[list[int]], new: int) -> list[list[int]]:
    B, L = len(prompts), max(len(p) for p in prompts)
    ids_BT = torch.full((B, L), policy.pad_id, dtype=torch.long)
    attn_BT = torch.zeros((B, L), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids_BT[b, L - len(p) :] = torch.tensor(p)
        attn_BT[b, L - len(p) :] = 1
    out = policy.model.generate(
        input_ids=ids_BT.to(policy.device),
        attention_mask=attn_BT.to(policy.device),
        do_sample=False,
        max_new_tokens=new,
        min_new_tokens=new,
        pad_token_id=policy.pad_id,
    )
    return out[:, L:].tolist()


def timed(fns: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, float], dict]:
    """Best time of each fn over `repeats` rounds, interleaved so machine load hits all alike."""
    best = {name: float("inf") for name in fns}
    results: dict[str, object] = {}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            results[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best, results


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", help="checkpoint directory (default: build the tiny model)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new", type=int, default=32, help="new tokens per prompt")
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    path = args.model or str(build_tiny(tempfile.mkdtemp() + "/tiny", env_ids=[]))
    policy = HFPolicy(path, device=args.device, seed=0)
    # Count every token: no early stop on eos, so each method does the same work.
    policy.eos_ids = set()
    prompts = prompts_for(policy, args.batch)
    n_tok = args.batch * args.new
    gen = dict(max_new_tokens=args.new, temperature=0.0, top_p=1.0)

    fast, out = timed(
        {
            "batch": lambda: policy.generate(prompts, **gen),
            "hf": lambda: hf_generate(policy, prompts, args.new),
        },
        args.repeats,
    )
    slow, _ = timed(
        {
            "single": lambda: [policy.generate([p], **gen) for p in prompts],
            "nocache": lambda: no_cache_loop(policy, prompts, args.new),
        },
        1,
    )
    t_batch, t_hf, t_single, t_nocache = fast["batch"], fast["hf"], slow["single"], slow["nocache"]
    same = sum(g.token_ids == t for g, t in zip(out["batch"], out["hf"], strict=True))

    print(f"model={path} device={policy.device} batch={args.batch} new_tokens={args.new}")
    print(f"prompt lengths {min(map(len, prompts))}..{max(map(len, prompts))} tokens")
    for name, t in [
        ("HFPolicy.generate batched (KV cache)", t_batch),
        ("HFPolicy.generate one prompt at a time", t_single),
        ("batched, no KV cache", t_nocache),
        ("transformers model.generate batched", t_hf),
    ]:
        print(
            f"{name:40s} {t:8.3f} s  {n_tok / t:9.1f} tok/s  time ratio vs ours {t / t_batch:6.2f}x"
        )
    print(f"greedy outputs identical to model.generate: {same}/{args.batch}")


if __name__ == "__main__":
    main()
