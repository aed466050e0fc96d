"""The main job (DAgger on Sokoban) trained with `sampler: hf` and with `sampler: vllm`, over seeds.

    python bench/sampler_parity.py                              # the full main job, 3 seeds each
    python bench/sampler_parity.py --set iterations=3 --set eval_episodes=50   # a shortened one

Each run is `mentorgym train configs/sokoban_dagger.yaml --set sampler=S --set seed=K [--set ...]`
in a subprocess (its own vLLM engine); runs go to `--out/S_seedK` and a finished run is read
back, not run again. Prints, per run, the mean training loss of each iteration, the held-out
success of each iteration and the largest sampler gap DAgger logged (the sampler's logprobs of
the student's sampled tokens against the trainer's, after each weight sync); then the final
held-out success per sampler (mean, min, max over seeds).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(sampler: str, seed: int, sets: list[str], out: Path) -> list[dict]:
    run_dir = out / f"{sampler}_seed{seed}"
    if not (run_dir / "final" / "config.json").exists():
        cmd = [sys.executable, "-m", "mentorgym.cli", "train", "configs/sokoban_dagger.yaml"]
        for s in [f"sampler={sampler}", f"seed={seed}", "progress=false", *sets]:
            cmd += ["--set", s]
        cmd += ["--out", str(run_dir)]
        with open(out / f"{sampler}_seed{seed}.log", "w") as log:
            subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if x.strip()]


def summary(records: list[dict]) -> dict:
    iters = sorted({r["iteration"] for r in records if r.get("kind") == "train"})
    loss = []
    for i in iters:
        xs = [r["loss"] for r in records if r.get("kind") == "train" and r["iteration"] == i]
        loss.append(sum(xs) / len(xs))
    held = [r.get("success_rate") for r in records if r.get("kind") == "eval"]
    gaps = [r["sampler_logprob_gap_max"] for r in records if r.get("kind") == "sampler_gap"]
    return {"loss": loss, "heldout": held, "gap_max": max(gaps) if gaps else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samplers", nargs="+", default=["hf", "vllm"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE for every run")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "sampler_parity")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    finals: dict[str, list[float]] = {}
    for sampler in args.samplers:
        for seed in args.seeds:
            s = summary(run(sampler, seed, args.set, args.out))
            loss = " ".join(f"{x:.3f}" for x in s["loss"])
            held = " ".join(f"{x:.2f}" for x in s["heldout"] if x is not None)
            gap = "-" if s["gap_max"] is None else f"{s['gap_max']:.1e}"
            print(
                f"{sampler:>4} seed {seed}: loss by iteration {loss} | held-out {held} | gap {gap}"
            )
            if s["heldout"] and s["heldout"][-1] is not None:
                finals.setdefault(sampler, []).append(s["heldout"][-1])
    for sampler, xs in finals.items():
        print(
            f"{sampler:>4}: final held-out mean {sum(xs) / len(xs):.3f} "
            f"(min {min(xs):.2f}, max {max(xs):.2f}, {len(xs)} seeds)"
        )


if __name__ == "__main__":
    main()
