"""One training step of a Qwen3-0.6B-shaped model at bf16: tokens per second and model FLOPs
utilization against the card's bf16 matmul peak measured in the same run.

    python bench/train_step_mfu.py                 # on a GPU: Qwen3-0.6B shape, seq 2048
    python bench/train_step_mfu.py --shape tiny    # a smoke run anywhere (CPU too)

MFU counts 6 * params * tokens for the matmuls of forward and backward plus the attention
term 12 * layers * hidden * seq * tokens (PaLM's appendix B accounting). The peak is the best
of a few large bf16 matmuls on this device, not the datasheet number.
"""

from __future__ import annotations

import argparse
import json
import time

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
        head_dim=16,
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="0.6b")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--grad-checkpointing", action="store_true")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    cfg = Qwen3Config(**SHAPES[args.shape], max_position_embeddings=max(args.seq, 4096))
    model = Qwen3ForCausalLM(cfg).to(device=device, dtype=dtype)
    if args.grad_checkpointing:
        model.gradient_checkpointing_enable()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    n_params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=device)
    tokens = args.batch * args.seq

    def step() -> float:
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.item()

    step()  # warm-up: allocator, kernels
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    dt = (time.perf_counter() - t0) / args.steps
    flops = 6 * n_params * tokens + 12 * cfg.num_hidden_layers * cfg.hidden_size * args.seq * tokens
    peak = matmul_peak_flops(device, dtype, 8192 if device.type == "cuda" else 1024)
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "shape": args.shape,
        "params": n_params,
        "dtype": str(dtype),
        "batch": args.batch,
        "seq": args.seq,
        "step_s": dt,
        "tokens_per_s": tokens / dt,
        "model_tflops": flops / dt / 1e12,
        "measured_peak_tflops": peak / 1e12,
        "mfu": flops / dt / peak,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
