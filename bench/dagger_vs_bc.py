"""DAgger against behaviour cloning at an equal budget of teacher labels and gradient steps.

For each seed: run DAgger from its config, read how many teacher labels it used in all
(`labels_total`) and how many optimizer steps it took; then run BC (the solver's own
episodes, SFT) capped at the same number of labels and the same number of steps. Both
students are evaluated greedily on the same held-out seeds. Prints a markdown table of mean
and spread, and the DAgger curve (held-out success after each iteration).

    python bench/dagger_vs_bc.py                                    # Sokoban, 3 seeds
    python bench/dagger_vs_bc.py --env math --seeds 0 1 2           # math with tools
    python bench/dagger_vs_bc.py --set iterations=4 --eval-episodes 100   # a quicker pass
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from mentorgym.training.entry import train_from_config

CONFIGS = {
    "sokoban": ("configs/sokoban_dagger.yaml", "configs/sokoban_bc.yaml"),
    "math": ("configs/math_dagger.yaml", "configs/math_bc.yaml"),
}


def _records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == kind]


def run_pair(env: str, seed: int, out: Path, eval_episodes: int, extra: list[str]) -> dict:
    dagger_cfg, bc_cfg = CONFIGS[env]
    common = [f"seed={seed}", f"eval_episodes={eval_episodes}", "progress=false"]
    d_dir = out / env / f"dagger_seed{seed}"
    train_from_config(dagger_cfg, common + extra, str(d_dir), None, False)
    d_evals = _records(d_dir, "eval")
    labels = d_evals[-1]["labels_total"]
    steps = max(r["step"] for r in _records(d_dir, "train"))
    # Enough solver episodes to yield `labels` labels, then capped to exactly that many.
    b_dir = out / env / f"bc_seed{seed}"
    bc_sets = common + [
        f"max_labels={labels}",
        f"steps={steps}",
        f"episodes={max(64, labels // 2)}",
    ]
    train_from_config(bc_cfg, bc_sets, str(b_dir), None, False)
    b_eval = _records(b_dir, "eval")[-1]
    return {
        "env": env,
        "seed": seed,
        "labels": labels,
        "steps": steps,
        "dagger": d_evals[-1]["success_rate"],
        "bc": b_eval["success_rate"],
        "dagger_curve": [r["success_rate"] for r in d_evals],
    }


def _mean_sd(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else math.nan
    return f"{statistics.mean(xs):.3f} ± {sd:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", choices=sorted(CONFIGS), default="sokoban")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--eval-episodes", type=int, default=200)
    p.add_argument("--out", default="runs/dagger_vs_bc")
    p.add_argument("--set", action="append", default=[], help="extra DAgger overrides, key=value")
    args = p.parse_args()
    out = Path(args.out)
    rows = [run_pair(args.env, s, out, args.eval_episodes, args.set) for s in args.seeds]
    (out / args.env).mkdir(parents=True, exist_ok=True)
    (out / args.env / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"\n| {args.env} | labels | steps | DAgger | BC |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| seed {r['seed']} | {r['labels']} | {r['steps']} | {r['dagger']:.3f} | {r['bc']:.3f} |"
        )
    print(
        f"| mean ± sd | | | {_mean_sd([r['dagger'] for r in rows])} | {_mean_sd([r['bc'] for r in rows])} |"
    )
    print("\nDAgger held-out success by iteration:")
    for r in rows:
        print(f"  seed {r['seed']}: " + " -> ".join(f"{x:.2f}" for x in r["dagger_curve"]))


if __name__ == "__main__":
    main()
