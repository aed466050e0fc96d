"""Compare the on-policy family against DAgger at an equal budget of sampled episodes.

For each env (Sokoban, math with a python tool):
1. Inits sharing one tokenizer (token-level distillation scores the student's own ids):
   the student is `build_tiny(size="tiny")` (0.86M parameters), warm-started by behaviour
   cloning on expert episodes, as the OPD papers start from an SFT'd student (an on-policy
   method on a from-scratch student would sample nothing worth learning from); the teacher
   is `build_tiny(size="base")` (about 6x the parameters; `--teacher-size small`, about 30x).
2. The teacher is brought to high success by DAgger from the env's expert (training/dagger.py),
   or `--teacher RUN/final` reuses one already trained (with the student's tokenizer).
3. From the same warm student, each method trains on the same number of sampled episodes:
   GRPO, OPD (sampled-token, teacher in process), SOD, Skill-SD (rule summarizer), OPSD
   (privileged context; the live student as teacher, or `--methods opsd_frozen` for a frozen
   copy of the initial student), and DAgger with the model teacher labelling every visited
   state. `--lr` sets the on-policy methods' rate (DAgger's supervised steps keep 1e-3).
   `--seeds` seeds each; the held-out success rate (greedy, seeds from 1,000,000) is
   measured along training and at the end.
4. Prints a markdown table: final held-out success mean ± std over seeds, and the curve
   (mean success at each evaluation, by episodes sampled), plus the teacher's and the warm
   student's success.

    python bench/distill_compare.py --quick            # a smoke run of the whole pipeline
    python bench/distill_compare.py                    # the budget the README reports

Results (per-run metrics, the table) are written under --out (default runs/distill_compare).
A killed run picks up where it stopped: finished runs are kept and unfinished ones resume
from their checkpoints. The models are small, so one thread each is fastest; two envs can
run side by side on two cores with `OMP_NUM_THREADS=1`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

ENVS = {
    "sokoban": dict(
        env_id="mentorgym/Sokoban-v0",
        env_kwargs={},
        max_new_tokens=16,
        reward="return",
        # The grid is the whole state: every model sees the current observation only.
        context=dict(context_turns=1, system_prompt=False),
        # The main job's recipe (batch 64, lr 3e-3) at the base size: smaller batches and
        # rates left the teacher predicting the marginal distribution of moves.
        full_budget=dict(
            warm_episodes=128,
            warm_steps=200,
            teacher_iters=5,
            teacher_steps=100,
            teacher_batch=64,
            teacher_lr=3e-3,
        ),  # fmt: skip
    ),
    "math": dict(
        env_id="mentorgym/MathTools-v0",
        env_kwargs={"python_cmd": "python3 -S"},
        max_new_tokens=96,
        reward="success",
        context={},  # the whole conversation (the defaults)
        # The answer format (a tool call, then an answer) takes longer to learn than a move.
        full_budget=dict(warm_episodes=128, warm_steps=200, teacher_steps=100),
    ),
}
METHODS = ["grpo", "opd", "sod", "skill_sd", "opsd", "dagger"]
EXTRA_METHODS = ["opsd_frozen"]  # OPSD with a frozen copy of the initial student as teacher

QUICK = dict(
    steps=2, tasks=2, group=2, evals=8, teacher_iters=1, teacher_episodes=16,
    teacher_steps=10, teacher_batch=16, teacher_lr=1e-3, warm_episodes=16, warm_steps=10,
)  # fmt: skip
FULL = dict(
    steps=8, tasks=4, group=4, evals=32, teacher_iters=3, teacher_episodes=64,
    teacher_steps=80, teacher_batch=16, teacher_lr=1e-3, warm_episodes=64, warm_steps=60,
)  # fmt: skip
DEFAULT_LR = 1e-3
WARM_SEED = 500_000  # expert episodes for the warm start, apart from training and held-out seeds


def env_settings(env: dict[str, Any], b: dict[str, int]) -> dict[str, Any]:
    """The config values every run on `env` shares: the env, its turn length, the context
    window and the held-out evaluation."""
    return dict(
        env_id=env["env_id"],
        env_kwargs=env["env_kwargs"],
        max_new_tokens=env["max_new_tokens"],
        eval_episodes=b["evals"],
        progress=False,
        **env["context"],
    )


def last_eval(run: Path) -> float:
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r.get("kind") == "eval" and "success_rate" in r]
    return float(evals[-1]["success_rate"]) if evals else float("nan")


def build_inits(
    out: Path, env: dict[str, Any], b: dict[str, int], teacher_size: str = "base"
) -> tuple[str, str, float]:
    """(warm student, teacher init, the warm student's held-out success); one tokenizer."""
    from mentorgym.agents.tiny import build_tiny
    from mentorgym.training import sft
    from mentorgym.training.config import build_config

    scratch = out / "init_student"
    if not (scratch / "config.json").exists():
        build_tiny(scratch, size="tiny", env_ids=[env["env_id"]], seed=0)
    teacher = out / ("init_teacher" if teacher_size == "base" else f"init_teacher_{teacher_size}")
    if not (teacher / "config.json").exists():
        build_tiny(teacher, size=teacher_size, seed=1, tokenizer_from=scratch)
    warm = out / "warm_student"
    if not (warm / "final" / "config.json").exists():
        cfg = build_config(
            sft.Config,
            dict(
                env_settings(env, b),
                student=str(scratch),
                teacher="expert",
                episodes=b["warm_episodes"],
                steps=b["warm_steps"],
                seed=WARM_SEED,
                batch_size=16,
                lr=2e-3,
                warmup_steps=5,
                save_every=0,
                max_seq_len=1024,
            ),
        )
        sft.train(cfg, warm, resume=True)
    return str(warm / "final"), str(teacher), last_eval(warm)


def train_teacher(
    out: Path, env: dict[str, Any], init: str, b: dict[str, int]
) -> tuple[str, float]:
    from mentorgym.training import dagger
    from mentorgym.training.config import build_config

    size = Path(init).name.removeprefix("init_teacher")  # "" for base, "_small", ...
    run = out / f"teacher{size}"
    final = run / "final"
    if not (final / "config.json").exists():
        cfg = build_config(
            dagger.Config,
            dict(
                env_settings(env, b),
                student=init,
                teacher="expert",
                iterations=b["teacher_iters"],
                episodes=b["teacher_episodes"],
                beta_decay_iters=max(1, b["teacher_iters"] // 2),
                steps_per_iteration=b["teacher_steps"],
                batch_size=b["teacher_batch"],
                lr=b["teacher_lr"],
                warmup_steps=10,
                save_every=0,
                max_seq_len=1024,
            ),
        )
        dagger.train(cfg, run, resume=True)
    return str(final), last_eval(run)


def run_method(
    method: str,
    seed: int,
    out: Path,
    env: dict[str, Any],
    student: str,
    teacher: str,
    b: dict[str, int],
    lr: float = DEFAULT_LR,
) -> list[tuple[int, float]]:
    """Train one method; returns the curve [(episodes sampled, held-out success)].

    `lr` is the on-policy methods' peak rate; DAgger's supervised steps keep 1e-3."""
    import importlib

    from mentorgym.training.config import build_config

    tag = "" if lr == DEFAULT_LR or method == "dagger" else f"_lr{lr:g}"
    run = out / f"{method}{tag}_seed{seed}"
    budget = b["steps"] * b["tasks"] * b["group"]
    if not (run / "final" / "config.json").exists():
        module = importlib.import_module(f"mentorgym.training.{method.removesuffix('_frozen')}")
        common = dict(env_settings(env, b), student=student, seed=seed)
        if method == "dagger":
            iters = 4 if b["steps"] >= 4 else b["steps"]
            values = dict(
                common,
                teacher=f"hf:{teacher}",
                iterations=iters,
                episodes=budget // iters,
                beta_decay_iters=max(1, iters // 2),
                steps_per_iteration=20,
                batch_size=16,
                lr=1e-3,
                warmup_steps=5,
                save_every=0,
                max_seq_len=1024,
            )
        else:
            values = dict(
                common,
                steps=b["steps"],
                tasks_per_step=b["tasks"],
                group_size=b["group"],
                reward=env["reward"],
                lr=lr,
                eval_every=max(1, b["steps"] // 2),
                save_every=0,
                eval_seed=1_000_000,
            )
            if method in ("opd", "sod"):
                values["teacher"] = f"hf:{teacher}"
            if method.startswith("opsd"):
                # `opsd` is the live-teacher variant, `opsd_frozen` the step-0 teacher (the default).
                values["teacher_weights"] = "initial" if method == "opsd_frozen" else "live"
        module.train(build_config(module.Config, values), run, resume=True)
    curve = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") != "eval" or "success_rate" not in r:
            continue
        done = r.get("episodes_total")
        if done is None:  # DAgger logs iterations
            done = (r["iteration"] + 1) * (budget // (4 if b["steps"] >= 4 else b["steps"]))
        curve.append((int(done), float(r["success_rate"])))
    return curve


def _run_logged(task: tuple[Any, ...]) -> list[tuple[int, float]] | None:
    """`run_method(*task)` in a worker: one thread, output to OUT/logs/METHOD_seedN.log;
    None if it failed (the traceback is in the log; a rerun resumes it)."""
    import contextlib
    import os
    import traceback

    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    method, seed, out = task[0], task[1], task[2]
    log = out / "logs" / f"{method}_seed{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        try:
            return run_method(*task)
        except Exception:
            traceback.print_exc()
            return None


def _worker_init(parent: int) -> None:
    """A worker ends when the bench does: a killed or timed-out bench leaves no runs behind
    still writing into its folders."""
    import os
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_all(jobs: int, tasks: list[tuple[Any, ...]]) -> list[list[tuple[int, float]] | None]:
    """Each task's curve, in order; with `jobs > 1` in that many spawned processes."""
    if jobs <= 1:
        return [run_method(*t) for t in tasks]
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, ctx, _worker_init, (os.getpid(),)) as ex:
        return list(ex.map(_run_logged, tasks))


def fmt(xs: list[float]) -> str:
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small budget for a first run")
    p.add_argument("--envs", nargs="*", default=list(ENVS), choices=list(ENVS))
    p.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS + EXTRA_METHODS)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default="runs/distill_compare")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help="on-policy methods' peak rate")
    p.add_argument(
        "--teacher",
        help="an already trained teacher (`RUN/final` of a DAgger run, the student's tokenizer) "
        "instead of training one; its success is the last evaluation in RUN/metrics.jsonl",
    )
    p.add_argument(
        "--teacher-size",
        default="base",
        choices=["base", "small"],
        help="the teacher's tiny size (base ~4.9M, small ~25M parameters)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs side by side, one thread each (on a GPU they share it); logs under OUT/ENV/logs",
    )
    p.add_argument(
        "--budget",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help=f"override budget values ({', '.join(FULL)}, warm_episodes, warm_steps)",
    )
    args = p.parse_args()
    overrides = {
        k: int(v) if v.lstrip("-").isdigit() else float(v)
        for k, v in (x.split("=", 1) for x in args.budget)
    }
    root = Path(args.out) / ("quick" if args.quick else "full")
    lines = []
    t0 = time.time()
    for name in args.envs:
        env = ENVS[name]
        b = QUICK if args.quick else {**FULL, **env.get("full_budget", {})}
        b = {**b, **overrides}
        out = root / name
        out.mkdir(parents=True, exist_ok=True)
        student, t_init, warm_success = build_inits(out, env, b, args.teacher_size)
        if args.teacher:
            teacher, t_success = args.teacher, last_eval(Path(args.teacher).parent)
        else:
            teacher, t_success = train_teacher(out, env, t_init, b)
        budget = b["steps"] * b["tasks"] * b["group"]
        lines += [
            f"\n### {name} ({env['env_id']}): {budget} sampled episodes per run, on-policy lr {args.lr:g}, "
            f"{b['evals']} held-out episodes, teacher ({Path(teacher).parent.name}, DAgger from expert) success {t_success:.3f}, "
            f"warm student (tiny, BC) success {warm_success:.3f}\n",
            "| method | final held-out success (mean ± std) | curve: episodes -> mean success |",
            "|---|---|---|",
        ]
        runs = [(m, seed) for m in args.methods for seed in range(args.seeds)]
        results = run_all(
            args.jobs, [(m, seed, out, env, student, teacher, b, args.lr) for m, seed in runs]
        )
        for method in args.methods:
            mine = [r for (m, _), r in zip(runs, results) if m == method]
            curves = [c for c in mine if c is not None]
            if len(curves) < len(mine):
                print(f"{method}: {len(mine) - len(curves)} run(s) failed; see {out}/logs")
            finals = [c[-1][1] for c in curves if c]
            points: dict[int, list[float]] = {}
            for c in curves:
                for x, y in c:
                    points.setdefault(x, []).append(y)
            curve = ", ".join(f"{x}: {statistics.mean(ys):.2f}" for x, ys in sorted(points.items()))
            lines.append(f"| {method} | {fmt(finals)} | {curve} |")
            print(lines[-1], f"[{time.time() - t0:.0f}s]", flush=True)
    table = "\n".join(lines)
    name = "table.md" if args.lr == DEFAULT_LR else f"table_lr{args.lr:g}.md"
    (root / name).write_text(table + "\n")
    print(table)
    print(f"\ntotal {time.time() - t0:.0f}s; table in {root / name}")


if __name__ == "__main__":
    main()
