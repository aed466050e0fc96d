"""Working memory and time of the generalized JSD: mentorgym's chunked loss against TRL's
`GKDTrainer.generalized_jsd_loss`, and the fused linear variant against TRL on materialized
logits and liger-kernel's plain-PyTorch `LigerFusedLinearJSDLoss`.

Each configuration runs forward + backward in a fresh process. Working memory is the peak RSS
minus the RSS once the inputs exist (logits for the plain losses; hidden states and LM-head
weights for the fused ones). Values must agree to 1e-4.

    pip install trl liger-kernel --no-deps   # beside the CPU torch; neither may replace it
    python bench/kl_memory.py                 # B=2, T=1024, V in {32000, 151936}, beta in {0, 0.5, 1}
    python bench/kl_memory.py --vocab 32000 --betas 0.5 --fused-only
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

B, T, H = 2, 1024, 256
PROMPT = 64  # the first tokens of each row are prompt: masked out, as labels=-100 in TRL


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(impl: str, vocab: int, beta: float, chunk: int) -> dict:
    import torch

    # Import every implementation before measuring, so that module memory is not counted.
    from mentorgym.training.losses import chunk_rows, fused_linear_jsd, generalized_jsd

    chunk = chunk or chunk_rows(vocab)  # the same rows per chunk for mentorgym and Liger

    if impl in ("trl", "trl_linear"):
        from trl.experimental.gkd.gkd_trainer import GKDTrainer
    if impl == "liger":
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

    torch.manual_seed(0)
    mask = torch.ones(B, T)
    mask[:, :PROMPT] = 0
    labels = torch.where(mask.bool(), torch.zeros(B, T, dtype=torch.long), torch.full((B, T), -100))
    fused = impl in ("fused", "trl_linear", "liger")

    def rand(*shape: int, scale: float) -> torch.Tensor:
        # In place, so that making the inputs leaves no temporary above the baseline RSS.
        return torch.empty(*shape).normal_().mul_(scale)

    if fused:
        h_s, w_s = (
            rand(B, T, H, scale=H**-0.5).requires_grad_(),
            rand(vocab, H, scale=2).requires_grad_(),
        )
        h_t, w_t = rand(B, T, H, scale=H**-0.5), rand(vocab, H, scale=2)
    else:
        s, t = rand(B, T, vocab, scale=2).requires_grad_(), rand(B, T, vocab, scale=2)
    base = _rss()
    t0 = time.perf_counter()
    if impl == "chunked":
        loss = generalized_jsd(s, t, mask, beta, chunk_size=chunk)
    elif impl == "trl":
        loss = GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta)
    elif impl == "fused":
        loss = fused_linear_jsd(h_s, w_s, h_t, w_t, mask, beta, chunk_size=chunk)
    elif impl == "trl_linear":
        loss = GKDTrainer.generalized_jsd_loss(h_s @ w_s.T, h_t @ w_t.T, labels=labels, beta=beta)
    elif impl == "liger":
        fn = LigerFusedLinearJSDLoss(
            weight_hard_loss=0.0, weight_soft_loss=1.0, beta=beta, compiled=False, chunk_size=chunk
        )
        loss = fn(h_s.view(B * T, H), w_s, h_t.view(B * T, H), w_t, labels.view(-1))
    else:
        raise ValueError(impl)
    loss.backward()
    elapsed = time.perf_counter() - t0
    work = (_peak() - base) / 2**30  # before the checksum below, which makes a temporary
    grad = (h_s.grad if fused else s.grad).abs().sum().item()
    return {
        "impl": impl,
        "vocab": vocab,
        "beta": beta,
        "value": loss.item(),
        "grad_abs_sum": grad,
        "work_gb": work,
        "time_s": elapsed,
    }


def run(impl: str, vocab: int, beta: float, chunk: int) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, str(vocab), str(beta), str(chunk)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {
            "impl": impl,
            "vocab": vocab,
            "beta": beta,
            "error": (out.stderr.strip().splitlines() or ["killed"])[-1],
        }
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fits(impl: str, vocab: int, beta: float) -> bool:
    """TRL keeps about 15 logits-sized float32 tensors at beta in (0, 1); skip what cannot fit."""
    import psutil

    logits = B * T * vocab * 4
    factor = {"trl": 16 if 0 < beta < 1 else 8, "trl_linear": 18 if 0 < beta < 1 else 10}.get(
        impl, 3
    )
    return factor * logits < 0.9 * psutil.virtual_memory().available


def _row(ours: dict, peer: dict) -> str:
    if "error" in ours or "error" in peer:
        return (
            f"| {ours['vocab']} | {ours['beta']} | {ours.get('error') or peer.get('error')} | | | |"
        )
    agree = abs(ours["value"] - peer["value"]) <= 1e-4 * max(1.0, abs(peer["value"]))
    return (
        f"| {ours['vocab']} | {ours['beta']} | {ours['value']:.5f} vs {peer['value']:.5f} ({'equal' if agree else 'DIFFER'}) "
        f"| {ours['work_gb']:.2f} vs {peer['work_gb']:.2f} GB | {ours['work_gb'] / max(peer['work_gb'], 1e-9):.3f} "
        f"| {ours['time_s']:.2f} vs {peer['time_s']:.2f} s ({peer['time_s'] / ours['time_s']:.2f}x faster) |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", nargs=4, metavar=("IMPL", "V", "BETA", "CHUNK"))
    p.add_argument("--vocab", type=int, nargs="+", default=[32000, 151936])
    p.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    p.add_argument("--chunk", type=int, default=0, help="tokens per chunk (0: chunk_rows(V))")
    p.add_argument("--fused-only", action="store_true")
    p.add_argument("--plain-only", action="store_true")
    args = p.parse_args()
    if args.child:
        impl, v, beta, chunk = args.child
        print(json.dumps(child(impl, int(v), float(beta), int(chunk))))
        return
    header = "| V | beta | value (ours vs peer) | working memory | ratio | time |\n|---|---|---|---|---|---|"
    results = []
    if not args.fused_only:
        print(
            f"## chunked generalized_jsd vs TRL GKDTrainer.generalized_jsd_loss (B={B}, T={T})\n\n{header}"
        )
        for vocab in args.vocab:
            for beta in args.betas:
                ours = run("chunked", vocab, beta, args.chunk)
                peer = (
                    run("trl", vocab, beta, args.chunk)
                    if _fits("trl", vocab, beta)
                    else {
                        "impl": "trl",
                        "vocab": vocab,
                        "beta": beta,
                        "error": "TRL skipped: it would not fit in free memory",
                    }
                )
                results += [ours, peer]
                print(_row(ours, peer), flush=True)
    if not args.plain_only:
        for peer_impl in ("trl_linear", "liger"):
            print(
                f"\n## fused_linear_jsd vs {peer_impl} (B*T={B * T} tokens, hidden {H})\n\n{header}"
            )
            for vocab in args.vocab:
                for beta in args.betas:
                    ours = run("fused", vocab, beta, args.chunk)
                    peer = (
                        run(peer_impl, vocab, beta, args.chunk)
                        if _fits(peer_impl, vocab, beta)
                        else {
                            "impl": peer_impl,
                            "vocab": vocab,
                            "beta": beta,
                            "error": "skipped: would not fit in free memory",
                        }
                    )
                    results += [ours, peer]
                    print(_row(ours, peer), flush=True)
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
