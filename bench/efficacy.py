"""Do the methods teach? Fair protocols written once, one command per regime.

A regime is an env (and its kwargs) with a protocol; `python bench/efficacy.py REGIME`
runs every arm for every seed and writes `bench/results/efficacy_REGIME.{md,json,png}`
(a table, the raw numbers, a curve plot). Runs live under `--out` and a rerun resumes:
finished runs are read back, not redone.

`dagger_bc` regimes (DAgger against behaviour cloning, `python bench/efficacy.py
sokoban_undo`):
- A fixed pool of training rooms per seed: seeds `seed .. seed + iterations*episodes - 1`.
  DAgger plays them over its iterations; BC clones the expert's episodes on the same pool.
- DAgger: iteration 0 is BC (beta 1: the expert drives), then beta decays (`linear` over
  `beta_decay_iters`), the student samples at `rollout_temperature`, `dedupe` keeps one
  copy of each (context, label), `lr_schedule: run` is one AdamW and one warmup + cosine.
- BC twice, at DAgger's budget: `bc_labels` with as many teacher labels as DAgger asked
  for (`labels_total`), `bc_unique` with as many as DAgger's unique labels; both take
  DAgger's number of optimizer steps. The pool caps BC's labels: the table states what
  each arm used (labels, unique labels, episodes sampled).
- Every arm gets the same `--set` overrides (each to the arms whose config has the key)
  and is evaluated by the same function (`final_eval`: greedy, `--eval-episodes` held-out
  rooms from seed 1,000,000, the checkpoint's own window), which also counts the episodes
  that end at a dead end and the Undo moves played.
- Statistics: mean and 95% t-interval over seeds per arm, and the paired difference
  DAgger - BC per seed with its own t-interval (seeds pair the pool and the init).

`distill` regimes (`python bench/efficacy.py sokoban_distill`): a warm student (BC on the
expert's episodes, `warm_steps` steps) is the start of every arm; GRPO, OPD, SOD (teacher:
the scripted expert as a token-level teacher, `teacher: expert`) and Skill-SD (`sd_coef`
swept on a validation split, seeds from 2,000,000, never the held-out set) each run
`--steps` optimizer steps of the same `tasks x group` episodes, sampled by `--sampler`
(`hf`, or `vllm` where vLLM is installed); the held-out success is logged every
`eval_every` steps (`--curve-episodes` rooms), the expert's own success is stated.

`--probe` measures the regimes' mechanism without a model: a noisy expert (a random move
with probability `noise`) with and without undo, on Sokoban-v0, 2 and 3: how many
episodes reach a dead end, and how many of those turns the expert can label.

    python bench/efficacy.py sokoban_undo --smoke                 # the whole pipeline, tiny
    python bench/efficacy.py sokoban_undo --seeds 0 1 2 3 4 --eval-episodes 500
    python bench/efficacy.py sokoban_v0 --seeds 0 1 2             # the control
    python bench/efficacy.py sokoban_distill --seeds 0 1 2 --steps 100 --sampler vllm
    python bench/efficacy.py sokoban_undo --probe --eval-episodes 200
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EVAL_SEED = 1_000_000
VALID_SEED = 2_000_000
"""Seeds of the validation split (Skill-SD's sd_coef sweep): apart from training and held-out."""
WARM_SEED = 500_000
"""Expert episodes of the distillation regimes' warm start."""

# The tiny student on Sokoban: the main job's recipe (configs/sokoban_dagger.yaml).
SOKOBAN_COMMON: dict[str, Any] = dict(
    student="tiny",
    teacher="expert",
    context_turns=1,
    system_prompt=False,
    batch_size=64,
    lr=3e-3,
    warmup_steps=10,
    max_seq_len=256,
    max_new_tokens=12,
    save_every=0,
    concurrency=64,
    progress=False,
)
DAGGER: dict[str, Any] = dict(
    iterations=6,
    episodes=64,
    beta_0=1.0,
    beta_schedule="linear",
    beta_decay_iters=3,
    rollout_temperature=1.0,
    steps_per_iteration=60,
    dedupe=True,
    lr_schedule="run",
)
REGIMES: dict[str, dict[str, Any]] = {
    "sokoban_undo": dict(
        protocol="dagger_bc",
        about="7x7 rooms, two boxes, 40 turns, Undo allowed (every state labeled)",
        env_id="mentorgym/Sokoban2-v0",
        env_kwargs={"undo": True},
        common=SOKOBAN_COMMON,
        dagger=DAGGER,
    ),
    "sokoban_v0": dict(
        protocol="dagger_bc",
        about="6x6 rooms, one box, 20 turns, no undo (the control)",
        env_id="mentorgym/Sokoban-v0",
        env_kwargs={},
        common=SOKOBAN_COMMON,
        dagger=DAGGER,
    ),
    "sokoban_distill": dict(
        protocol="distill",
        about="6x6 rooms, one box, 20 turns, Undo allowed; the expert as token-level teacher",
        env_id="mentorgym/Sokoban-v0",
        env_kwargs={"undo": True},
        common=SOKOBAN_COMMON,
        warm=dict(episodes=64, steps=60),
        onpolicy=dict(
            tasks_per_step=4,
            group_size=4,
            lr=2e-4,
            reward="return",
            rollout_temperature=1.0,
            eval_every=25,
            max_seq_len=256,
            warmup_steps=0,
        ),
        arms=["grpo", "opd", "sod", "skill_sd"],
        sd_coefs=[1e-3, 1e-2, 1e-1],
    ),
}
SMOKE = dict(
    dagger=dict(iterations=2, episodes=8, steps_per_iteration=4, beta_decay_iters=1),
    common=dict(batch_size=16, concurrency=16),
    warm=dict(episodes=8, steps=4),
)


# --- statistics ------------------------------------------------------------------------------

_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip
"""Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom."""


def t_interval(xs: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t-interval of the mean (nan bounds for one value)."""
    m = statistics.mean(xs)
    if len(xs) < 2:
        return m, math.nan, math.nan
    df = len(xs) - 1
    half = (_T975[df - 1] if df <= len(_T975) else 1.96) * statistics.stdev(xs) / math.sqrt(len(xs))
    return m, m - half, m + half


def fmt_ci(xs: list[float]) -> str:
    m, lo, hi = t_interval(xs)
    return f"{m:.3f}" if math.isnan(lo) else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


# --- runs ------------------------------------------------------------------------------------


def build(module: Any, values: dict[str, Any], sets: dict[str, str]) -> Any:
    """The algorithm's Config from `values` and the `--set` overrides its Config has."""
    from mentorgym.training.config import build_config

    names = {f.name for f in dataclasses.fields(module.Config)}
    vals = {k: v for k, v in values.items() if k in names and v is not None}
    vals.update(
        {k: v for k, v in sets.items() if k in names}
    )  # strings, coerced to the field's type
    return build_config(module.Config, vals)


def check_sets(sets: dict[str, str], modules: list[Any]) -> None:
    known = {f.name for m in modules for f in dataclasses.fields(m.Config)}
    bad = sorted(set(sets) - known)
    if bad:
        sys.exit(f"--set {', '.join(bad)}: no arm's config has that key")


def records(run: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == kind]


def train_once(module: Any, cfg: Any, run: Path) -> Path:
    """Train unless `run/final` exists (a finished run is read back, an unfinished resumes)."""
    final = run / "final"
    if not (final / "config.json").exists():
        module.train(cfg, run, resume=True)
    return final


def final_eval(
    final: Path, env_id: str, env_kwargs: dict[str, Any], n: int, out: Path
) -> dict[str, Any]:
    """The one evaluation every arm gets: the checkpoint (its card's window, greedy) on `n`
    held-out rooms from EVAL_SEED; plus dead ends at the end and Undo moves played."""
    from mentorgym.agents.hf import HFPolicy
    from mentorgym.agents.rollout import run as rollout
    from mentorgym.agents.rollout import summarize
    from mentorgym.agents.trajectory import read_trajectories

    cached = out.with_suffix(".json")
    if cached.exists() and json.loads(cached.read_text())["episodes_eval"] == n:
        return json.loads(cached.read_text())
    if out.exists():
        out.unlink()
    trajs = rollout(
        env_id, HFPolicy(str(final), seed=0), n, seed=EVAL_SEED, env_kwargs=env_kwargs,
        out=out, concurrency=64, progress=False,
    )  # fmt: skip
    trajs = list(read_trajectories(out))
    summary = summarize(trajs) | dead_end_stats(trajs, env_id, env_kwargs)
    summary["episodes_eval"] = summary.pop("episodes")
    cached.write_text(json.dumps(summary))
    return summary


def dead_end_stats(trajs: list[Any], env_id: str, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Sokoban only: the share of episodes that ended at a dead end (no solution from the
    final position) and the Undo moves per episode; {} for other envs."""
    from mentorgym import make
    from mentorgym.envs.sokoban import SokobanEnv, solve_level

    env = make(env_id, **env_kwargs)
    inner = env.unwrapped
    if not isinstance(inner, SokobanEnv):
        return {}
    dead, undos = 0, 0
    for t in trajs:
        inner.reset(seed=t.seed)
        for turn in t.turns:
            inner.step(turn.action)
            undos += "undo" in turn.action.lower()
        if not t.success:
            player, boxes = inner.state()
            dead += solve_level(inner.level, 10.0, boxes=boxes, player=player) is None
    env.close()
    return {
        "dead_end_rate": dead / max(len(trajs), 1),
        "undos_per_episode": undos / max(len(trajs), 1),
    }


def unique_labels(run: Path, cfg: Any, trajectory_files: list[Path], cap: int = 0) -> int:
    """Distinct (context, label) examples in a run's data (its first `cap` labels when
    `cap`), in the student's tokens."""
    from transformers import AutoTokenizer

    from mentorgym.agents.trajectory import read_trajectories
    from mentorgym.training.data import dedupe, examples_from_trajectories

    tok = AutoTokenizer.from_pretrained(str(run / "final"))
    trajs = [t for f in trajectory_files for t in read_trajectories(f)]
    exs, _ = examples_from_trajectories(
        trajs, tok, max_seq_len=cfg.max_seq_len, target="teacher",
        last_turns=cfg.context_turns, system_prompt=cfg.system_prompt,
    )  # fmt: skip
    return len(dedupe(exs[:cap] if cap else exs))


# --- DAgger against behaviour cloning ---------------------------------------------------------


def dagger_bc_seed(
    regime: dict[str, Any], seed: int, out: Path, sets: dict[str, str], n_eval: int, n_curve: int
) -> dict[str, Any]:
    """DAgger, then BC at its teacher labels and at its unique labels, all on one pool."""
    from mentorgym.training import dagger, sft

    common = dict(
        regime["common"], env_id=regime["env_id"], env_kwargs=regime["env_kwargs"], seed=seed,
        eval_seed=EVAL_SEED,
    )  # fmt: skip
    d_run = out / f"dagger_seed{seed}"
    d_cfg = build(dagger, dict(common, **regime["dagger"], eval_episodes=n_curve), sets)
    d_final = train_once(dagger, d_cfg, d_run)
    evals = records(d_run, "eval")
    labels = int(evals[-1]["labels_total"])
    steps = max(r["step"] for r in records(d_run, "train"))
    pool = d_cfg.iterations * d_cfg.episodes
    d_files = [dagger.iter_dir(d_run, i) / "rollouts.jsonl" for i in range(d_cfg.iterations)]
    row: dict[str, Any] = {"seed": seed, "pool_rooms": pool, "steps": steps}
    row["dagger"] = dict(
        labels=labels,
        unique_labels=unique_labels(d_run, d_cfg, d_files),
        episodes=pool,
        unlabeled_turns=sum(int(r.get("unlabeled_turns", 0)) for r in evals),
        curve=[(int(r["labels_total"]), float(r["success_rate"])) for r in evals],
        **final_eval(d_final, d_cfg.env_id, d_cfg.env_kwargs, n_eval, d_run / "heldout.jsonl"),
    )
    for arm, cap in (("bc_labels", labels), ("bc_unique", row["dagger"]["unique_labels"])):
        b_run = out / f"{arm}_seed{seed}"
        derived = dict(episodes=pool, max_labels=cap, steps=steps, eval_episodes=0)
        # BC's pool, cap and steps come from the DAgger run, never from --set (`episodes`
        # there means DAgger's rooms per iteration).
        kept = {k: v for k, v in sets.items() if k not in derived}
        b_cfg = build(sft, dict(common, **derived), kept)
        b_final = train_once(sft, b_cfg, b_run)
        used = int(records(b_run, "eval")[-1]["labels"])
        row[arm] = dict(
            labels=used,
            unique_labels=unique_labels(b_run, b_cfg, [b_run / "teacher.jsonl"], used),
            episodes=pool,
            unlabeled_turns=int(records(b_run, "eval")[-1].get("unlabeled_turns", 0)),
            **final_eval(b_final, b_cfg.env_id, b_cfg.env_kwargs, n_eval, b_run / "heldout.jsonl"),
        )
    print(json.dumps({k: v for k, v in row.items()}, default=str)[:400], flush=True)
    return row


DB_ARMS = ("dagger", "bc_labels", "bc_unique")


def dagger_bc_table(name: str, regime: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The markdown table: per arm mean [95% CI] over seeds, then the paired differences."""
    seeds = [r["seed"] for r in rows]
    head = (
        f"### {name}: {regime['about']}\n\nseeds {seeds}; {rows[0]['pool_rooms']} training rooms "
        f"per seed; {rows[0]['steps']} optimizer steps per arm; held-out rooms: "
        f"{rows[0]['dagger']['episodes_eval']} from seed {EVAL_SEED}; mean [95% t-interval]\n"
    )
    lines = [
        head,
        "| arm | held-out success | teacher labels | unique labels | episodes | dead-end rate | undos/episode | unlabeled turns |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in DB_ARMS:

        def col(k: str, arm: str = arm) -> list[float]:
            return [float(r[arm].get(k, math.nan)) for r in rows]

        lines.append(
            f"| {arm} | {fmt_ci(col('success_rate'))} | {statistics.mean(col('labels')):.0f} "
            f"| {statistics.mean(col('unique_labels')):.0f} | {statistics.mean(col('episodes')):.0f} "
            f"| {fmt_ci(col('dead_end_rate'))} | {statistics.mean(col('undos_per_episode')):.2f} "
            f"| {statistics.mean(col('unlabeled_turns')):.0f} |"
        )
    lines += ["", "| paired difference (per seed) | mean [95% CI] | per seed |", "|---|---|---|"]
    for bc in DB_ARMS[1:]:
        diffs = [r["dagger"]["success_rate"] - r[bc]["success_rate"] for r in rows]
        per = ", ".join(f"{d:+.3f}" for d in diffs)
        lines.append(f"| DAgger - {bc} | {fmt_ci(diffs)} | {per} |")
    return "\n".join(lines) + "\n"


def dagger_bc_plot(name: str, rows: list[dict[str, Any]], path: Path) -> None:
    """Held-out success against teacher labels: DAgger's per-iteration curve (mean over
    seeds; `--curve-episodes` rooms a point) and each arm's final result with its CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    curves = [r["dagger"]["curve"] for r in rows]
    k = min(len(c) for c in curves)
    xs = [statistics.mean(c[i][0] for c in curves) for i in range(k)]
    ys = [statistics.mean(c[i][1] for c in curves) for i in range(k)]
    ax.plot(xs, ys, "o-", color="C0", label="DAgger by iteration (mean over seeds)")
    for j, arm in enumerate(DB_ARMS):
        m, lo, hi = t_interval([r[arm]["success_rate"] for r in rows])
        x = statistics.mean(r[arm]["labels"] for r in rows)
        err = [[m - lo], [hi - m]] if not math.isnan(lo) else None
        ax.errorbar([x], [m], yerr=err, fmt="s", color=f"C{j}", capsize=4, label=f"{arm} final")
    ax.set_xlabel("teacher labels")
    ax.set_ylabel("held-out success")
    ax.set_title(f"{name}: DAgger vs BC ({len(rows)} seeds, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_dagger_bc(name: str, regime: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from mentorgym.training import dagger, sft

    sets = parse(args.set)
    check_sets(sets, [dagger, sft])
    out = Path(args.out) / name
    n, k = args.eval_episodes, args.curve_episodes
    rows = [dagger_bc_seed(regime, s, out, sets, n, k) for s in args.seeds]
    return {"table": dagger_bc_table(name, regime, rows), "rows": rows, "plot": dagger_bc_plot}


# --- the distillation family from a warm student ----------------------------------------------


def warm_start(regime: dict[str, Any], out: Path, sets: dict[str, str], n_eval: int) -> dict:
    """BC on the expert's episodes from WARM_SEED: the one start of every distillation arm."""
    from mentorgym.training import sft

    w = regime["warm"]
    values = dict(
        regime["common"], env_id=regime["env_id"], env_kwargs=regime["env_kwargs"], seed=WARM_SEED,
        episodes=w["episodes"], steps=w["steps"], eval_seed=EVAL_SEED, eval_episodes=0,
    )  # fmt: skip
    cfg = build(sft, values, {k: v for k, v in sets.items() if k not in ("seed",)})
    final = train_once(sft, cfg, out / "warm")
    result = final_eval(final, cfg.env_id, cfg.env_kwargs, n_eval, out / "warm" / "heldout.jsonl")
    return {
        "path": str(final),
        "labels": int(records(out / "warm", "eval")[-1]["labels"]),
        **result,
    }


def distill_run(
    regime: dict[str, Any], arm: str, seed: int, warm: str, steps: int, extra: dict[str, Any],
    sets: dict[str, str], run: Path, eval_seed: int, n_curve: int,
) -> Any:  # fmt: skip
    """One on-policy arm from the warm student; returns (its config, its final checkpoint)."""
    import importlib

    module = importlib.import_module(f"mentorgym.training.{arm}")
    values = dict(
        regime["common"], **regime["onpolicy"], **extra, env_id=regime["env_id"],
        env_kwargs=regime["env_kwargs"], student=warm, seed=seed, steps=steps,
        eval_seed=eval_seed, eval_episodes=n_curve,
    )  # fmt: skip
    if arm in ("opd", "sod"):
        values.update(teacher="expert", loss="sampled")
    cfg = build(module, values, sets)
    return cfg, train_once(module, cfg, run)


def sweep_sd_coef(
    regime: dict[str, Any], warm: str, out: Path, sets: dict[str, str], args: argparse.Namespace
) -> float:
    """Skill-SD's sd_coef with the best success on the validation split (seed 0 only)."""
    scores = {}
    for coef in regime["sd_coefs"]:
        run = out / f"skill_sd_sweep_coef{coef:g}"
        cfg, _ = distill_run(
            regime, "skill_sd", 0, warm, args.steps, {"sd_coef": coef}, sets, run,
            VALID_SEED, args.curve_episodes,
        )  # fmt: skip
        scores[coef] = float(records(run, "eval")[-1]["success_rate"])
    print(f"skill_sd sd_coef on the validation split (seeds from {VALID_SEED}): {scores}")
    return max(scores, key=lambda c: scores[c])


def run_distill(name: str, regime: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from mentorgym.training import grpo, opd, sft, skill_sd, sod

    sets = parse(args.set)
    check_sets(sets, [grpo, opd, skill_sd, sft, sod])
    out = Path(args.out) / name
    warm = warm_start(regime, out, sets, args.eval_episodes)
    print(f"warm student: held-out success {warm['success_rate']:.3f}", flush=True)
    sets = dict(sets, sampler=args.sampler)  # the on-policy arms' sampler (not the warm start's)
    coef = (
        sweep_sd_coef(regime, warm["path"], out, sets, args)
        if "skill_sd" in regime["arms"]
        else None
    )
    rows = []
    for seed in args.seeds:
        row: dict[str, Any] = {"seed": seed, "warm": warm["success_rate"]}
        for arm in regime["arms"]:
            extra = {"sd_coef": coef} if arm == "skill_sd" else {}
            run = out / f"{arm}_seed{seed}"
            cfg, final = distill_run(
                regime, arm, seed, warm["path"], args.steps, extra, sets, run, EVAL_SEED,
                args.curve_episodes,
            )  # fmt: skip
            curve = [
                (int(r["episodes_total"]), float(r["success_rate"])) for r in records(run, "eval")
            ]
            res = final_eval(
                final, cfg.env_id, cfg.env_kwargs, args.eval_episodes, run / "heldout.jsonl"
            )
            row[arm] = dict(res, curve=curve, episodes=cfg.steps * cfg.episodes_per_step)
        rows.append(row)
    table = distill_table(name, regime, rows, warm, coef, args)
    return {"table": table, "rows": rows, "plot": distill_plot}


def distill_table(
    name: str, regime: dict[str, Any], rows: list[dict[str, Any]], warm: dict[str, Any],
    coef: float | None, args: argparse.Namespace,
) -> str:  # fmt: skip
    arms = regime["arms"]
    eps = rows[0][arms[0]]["episodes"]
    lines = [
        f"### {name}: {regime['about']}\n\nwarm student: BC on {warm['labels']} expert labels, "
        f"held-out success {warm['success_rate']:.3f}; teacher: the solver (success 1.000 by "
        f"construction); {args.steps} optimizer steps and {eps} sampled episodes per arm; "
        f"Skill-SD sd_coef {coef} (chosen on the validation split); seeds {args.seeds}; "
        f"held-out rooms: {args.eval_episodes}; mean [95% t-interval]\n",
        "| arm | held-out success | minus warm start | minus GRPO (paired) | dead-end rate |",
        "|---|---|---|---|---|",
    ]
    for arm in arms:
        xs = [r[arm]["success_rate"] for r in rows]
        vs_grpo = [r[arm]["success_rate"] - r["grpo"]["success_rate"] for r in rows if "grpo" in r]
        lines.append(
            f"| {arm} | {fmt_ci(xs)} | {fmt_ci([x - warm['success_rate'] for x in xs])} "
            f"| {fmt_ci(vs_grpo) if arm != 'grpo' and vs_grpo else '-'} "
            f"| {fmt_ci([r[arm].get('dead_end_rate', math.nan) for r in rows])} |"
        )
    return "\n".join(lines) + "\n"


def distill_plot(name: str, rows: list[dict[str, Any]], path: Path) -> None:
    """Held-out success over sampled episodes per arm (mean over seeds), warm start and teacher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    arms = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    for j, arm in enumerate(arms):
        curves = [r[arm]["curve"] for r in rows]
        k = min(len(c) for c in curves)
        xs = [curves[0][i][0] for i in range(k)]
        ys = [statistics.mean(c[i][1] for c in curves) for i in range(k)]
        ax.plot([0, *xs], [rows[0]["warm"], *ys], "o-", color=f"C{j}", label=arm)
    ax.axhline(rows[0]["warm"], ls="--", color="gray", label="warm start")
    ax.axhline(1.0, ls=":", color="black", label="teacher (solver)")
    ax.set_xlabel("sampled episodes")
    ax.set_ylabel("held-out success")
    ax.set_title(f"{name}: on-policy arms from one warm student ({len(rows)} seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the regime's mechanism, without a model ------------------------------------------------------


def noisy_expert_probe(env_id: str, noise: float, undo: bool, n: int) -> dict[str, float]:
    """A stand-in for an imperfect student: each turn a random direction with probability
    `noise`, else the expert's label (a random direction where it has none). Returns the
    share of episodes that reach a dead end, that solve the room, and of dead-end turns the
    expert labeled (with undo: all of them)."""
    import random

    from mentorgym import make
    from mentorgym.envs.sokoban import MOVES

    env = make(env_id, undo=undo)
    rng = random.Random(0)
    reached, solved, dead_turns, labeled = 0, 0, 0, 0
    for i in range(n):
        env.reset(seed=EVAL_SEED + i)
        inner, hit = env.unwrapped, False
        while True:
            label = inner.expert_action()
            at_dead_end = label is None or "Undo" in label
            hit, dead_turns = hit or at_dead_end, dead_turns + at_dead_end
            labeled += at_dead_end and label is not None
            if label is None or rng.random() < noise:
                label = f"<answer>{rng.choice(MOVES)}</answer>"
            _obs, _r, term, trunc, info = env.step(label)
            if term or trunc:
                break
        reached += hit
        solved += bool(info["success"])
    env.close()
    return dict(
        dead_end_episodes=reached / n,
        success=solved / n,
        dead_end_turns_labeled=labeled / max(dead_turns, 1),
    )


def run_probe(args: argparse.Namespace) -> None:
    """`--probe`: the noisy expert with and without undo, on Sokoban-v0, 2 and 3."""
    lines = [
        f"noisy expert on {args.eval_episodes} rooms per cell (seeds from {EVAL_SEED}): "
        "each turn a random move with probability noise, else the expert's label\n",
        "| env | noise | undo | episodes reaching a dead end | success | dead-end turns labeled |",
        "|---|---|---|---|---|---|",
    ]
    for env_id in ("mentorgym/Sokoban-v0", "mentorgym/Sokoban2-v0", "mentorgym/Sokoban3-v0"):
        for noise in (0.1, 0.3, 0.5):
            for undo in (False, True):
                r = noisy_expert_probe(env_id, noise, undo, args.eval_episodes)
                lines.append(
                    f"| {env_id} | {noise} | {undo} | {r['dead_end_episodes']:.3f} "
                    f"| {r['success']:.3f} | {r['dead_end_turns_labeled']:.3f} |"
                )
                print(lines[-1], flush=True)
    command = "python bench/efficacy.py " + " ".join(sys.argv[1:])
    text = "\n".join(lines) + f"\n\ncommand: `{command}`\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "efficacy_probe.md").write_text(text)
    print(text)


# --- the command -------------------------------------------------------------------------------


def parse(sets: list[str]) -> dict[str, str]:
    from mentorgym.training.config import parse_sets

    return parse_sets(sets)


def smoke(regime: dict[str, Any]) -> dict[str, Any]:
    """The regime at a tiny budget: every step of the pipeline, in minutes."""
    r = dict(regime, common=dict(regime["common"], **SMOKE["common"]))
    if "dagger" in r:
        r["dagger"] = dict(r["dagger"], **SMOKE["dagger"])
    if "warm" in r:
        r["warm"] = dict(r["warm"], **SMOKE["warm"])
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("regime", choices=sorted(REGIMES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--eval-episodes", type=int, default=500, help="held-out rooms per final eval")
    p.add_argument(
        "--curve-episodes", type=int, default=100, help="held-out rooms per point of a curve"
    )
    p.add_argument("--steps", type=int, default=100, help="distill: optimizer steps per arm")
    p.add_argument(
        "--sampler", default="hf", choices=["hf", "vllm"], help="distill: the arms' sampler"
    )
    p.add_argument("--set", action="append", default=[], help="key=value for every arm")
    p.add_argument("--smoke", action="store_true", help="a tiny budget (results not saved)")
    p.add_argument("--out", default="runs/efficacy")
    p.add_argument(
        "--probe", action="store_true", help="only the noisy-expert probe (no model; any regime)"
    )
    args = p.parse_args()
    if args.probe:
        return run_probe(args)
    regime = REGIMES[args.regime]
    if args.smoke:
        regime = smoke(regime)
        args.out = str(Path(args.out) / "smoke")
    t0 = time.time()
    runner = run_dagger_bc if regime["protocol"] == "dagger_bc" else run_distill
    result = runner(args.regime, regime, args)
    command = "python bench/efficacy.py " + " ".join(sys.argv[1:])
    table = result["table"] + f"\ncommand: `{command}` ({time.time() - t0:.0f} s)\n"
    print("\n" + table)
    dest = Path(args.out) if args.smoke else RESULTS
    dest.mkdir(parents=True, exist_ok=True)
    stem = dest / f"efficacy_{args.regime}"
    stem.with_suffix(".md").write_text(table)
    stem.with_suffix(".json").write_text(
        json.dumps({"command": command, "rows": result["rows"]}, indent=1)
    )
    result["plot"](args.regime, result["rows"], stem.with_suffix(".png"))
    print(f"wrote {stem}.md, .json, .png")


if __name__ == "__main__":
    main()
