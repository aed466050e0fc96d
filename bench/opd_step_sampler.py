"""One OPD step on Sokoban with the tiny model, split into sampling, teacher scoring, update and
weight sync, with `sampler: hf` and `sampler: vllm`, in one run.

    python bench/opd_step_sampler.py [--steps 1] [--tasks 4] [--group 4] [--no-vllm]

The parts are the calls training/opd.py makes (sampled-token loss, the same tiny checkpoint
as student and in-process teacher):
1. weight sync: `vllm_engine.sync_weights`, the live weights into the engine in memory
   (`sampler: hf` samples with the live model itself: nothing to sync);
2. sampling: `onpolicy.sample`, `--tasks x --group` full episodes through the rollout engine;
3. teacher scoring: `scoring.teacher_logprobs` of the sampled tokens;
4. update: the student's forward and backward through `sampled_token_distill_loss` and the
   AdamW step.

The first step of each sampler is a warm-up (engine start, vLLM's first-generate compile) and
is not timed; the table shows the mean over `--steps` timed steps, seconds per part, each
part's share of the step, and vLLM's over hf's time for each part (none for the sync:
with `sampler: hf` there is nothing to sync).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mentorgym.agents.tiny import default_tiny_path
from mentorgym.training import onpolicy, opd, trainer
from mentorgym.training.config import build_config
from mentorgym.training.distributed import autocast
from mentorgym.training.losses import sampled_token_distill_loss
from mentorgym.training.scoring import (
    hidden_at,
    load_teacher,
    logprobs_from_hidden,
    teacher_logprobs,
)

PARTS = ("sync", "sampling", "scoring", "update")


def one_step(run: onpolicy.OnPolicyRun, cfg: opd.Config, teacher) -> dict[str, float]:
    """Seconds of each part of one OPD step."""
    from mentorgym.agents.vllm_engine import sync_weights

    student, t = run.student, {}
    t0 = time.perf_counter()
    if cfg.sampler == "vllm" and student.engine is not None:
        sync_weights(student.engine, student.model)
    t["sync"] = time.perf_counter() - t0
    # `onpolicy.sample` syncs again before sampling (the loop's own sync); that second load of
    # unchanged weights is taken out of the sampling time (logged as `sampler_sync_s`).
    n_logged = len(student.metrics.records)
    t0 = time.perf_counter()
    groups = onpolicy.sample(student, cfg, run.state.step)
    trajs = onpolicy.episodes_of(groups)
    inner = [
        r["sampler_sync_s"] for r in student.metrics.records[n_logged:] if "sampler_sync_s" in r
    ]
    t["sampling"] = time.perf_counter() - t0 - sum(inner)
    run.optimizer.zero_grad(set_to_none=True)
    t["scoring"] = t["update"] = 0.0
    for mb in onpolicy.micro_batches(student, cfg, groups):
        b = mb.batch
        with autocast(student.device, cfg.precision):
            t0 = time.perf_counter()
            lp_t_BL, _ = teacher_logprobs(
                teacher, student.tok, cfg, mb.trajs, mb.episodes, b, student.device
            )
            t1 = time.perf_counter()
            hidden_BLH = hidden_at(student.model, b)
            logp_BL = logprobs_from_hidden(
                student.model, hidden_BLH, b.target_BL, cfg.rollout_temperature
            )
            loss = sampled_token_distill_loss(logp_BL, b.logp_old_BL, lp_t_BL, b.mask_BL, 0.2)
        (loss * mb.share).backward()
        t["scoring"] += t1 - t0
        t["update"] += time.perf_counter() - t1
    t0 = time.perf_counter()
    trainer.optimizer_step(student.model, run.optimizer, run.scheduler, cfg.grad_clip)
    run.state.step += 1
    run.state.global_step = run.state.step
    t["update"] += time.perf_counter() - t0
    t["turns"] = float(sum(len(x.turns) for x in trajs))
    return t


def measure(sampler: str, args: argparse.Namespace, tiny: str, run_dir: Path) -> dict[str, float]:
    cfg = build_config(
        opd.Config,
        {
            "env_id": "mentorgym/Sokoban-v0",
            "student": tiny,
            "teacher": f"hf:{tiny}",
            "sampler": sampler,
            "steps": args.steps + 1,
            "tasks_per_step": args.tasks,
            "group_size": args.group,
            "max_new_tokens": args.max_new_tokens,
            "concurrency": args.tasks * args.group,
            "model_dtype": "float32",
            "device": "cpu",
            "eval_episodes": 0,
        },
    )
    run = onpolicy.start(cfg, run_dir, False, f"opd ({sampler})")
    teacher = load_teacher(cfg.teacher, run.student.device, run.student.tok)
    one_step(run, cfg, teacher)  # warm-up
    steps = [one_step(run, cfg, teacher) for _ in range(args.steps)]
    if run.student.engine is not None:
        run.student.engine.close()
    return {k: sum(s[k] for s in steps) / len(steps) for k in (*PARTS, "turns")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1, help="timed steps per sampler")
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--no-vllm", action="store_true", help="measure sampler: hf only")
    args = p.parse_args()
    tiny = str(default_tiny_path())
    samplers = ["hf"] if args.no_vllm else ["hf", "vllm"]
    res: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for s in samplers:
            res[s] = measure(s, args, tiny, Path(tmp) / s)
    print(f"\nOPD step, Sokoban, tiny, {args.tasks}x{args.group} episodes, mean of {args.steps}")
    print(
        f"{'part':<10}"
        + "".join(f"{s + ' s':>10}{s + ' %':>8}" for s in samplers)
        + ("  vllm/hf" if "vllm" in res else "")
    )
    for part in (*PARTS, "total"):
        row = f"{part:<10}"
        for s in samplers:
            total = sum(res[s][k] for k in PARTS)
            v = total if part == "total" else res[s][part]
            row += f"{v:>10.3f}{100 * v / total:>7.0f}%"
        if "vllm" in res:
            hf_v = sum(res["hf"][k] for k in PARTS) if part == "total" else res["hf"][part]
            vl_v = sum(res["vllm"][k] for k in PARTS) if part == "total" else res["vllm"][part]
            row += f"  {vl_v / hf_v:>7.2f}" if part != "sync" else f"  {'-':>7}"
        print(row)
    print(json.dumps({s: {k: round(v, 4) for k, v in r.items()} for s, r in res.items()}))


if __name__ == "__main__":
    main()
