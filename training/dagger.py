"""DAgger with turn-level interpolation (Revisiting DAgger in the Era of LLM-Agents).

Iteration i:
1. Roll out `episodes` episodes on training seeds with a per-turn mixture: each turn
   is written wholly by the teacher with probability beta_i, else by the student
   (sampling at `rollout_temperature`). beta_0 = `beta_0` and beta decays to 0 over
   `beta_decay_iters` iterations (`linear`, `cosine`, `exponential`, `step`).
2. Every visited state is labeled with the teacher's action (the engine's relabeling);
   the trajectories are saved in `RUN/iter_XX/rollouts.jsonl`.
3. The labels of all iterations so far are aggregated (optionally only the last
   `window` iterations, de-duplicated, capped at the newest `max_labels`, older
   iterations weighted by `old_weight ** age`), and the student is trained by
   cross-entropy on the aggregate for `steps_per_iteration` steps.
4. The pure student (beta = 0, `eval_temperature`) is evaluated on `eval_episodes`
   held-out seeds from `eval_seed` (disjoint from the training seeds), printed as one
   line and logged.

Resume (`--resume RUN`) works at iteration granularity (finished iterations are not
redone; a half-collected iteration replays only its unfinished episodes) and within
an iteration's training from the step checkpoints. The final student is `RUN/final`.

Run: `mentorgym train configs/sokoban_dagger.yaml`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mentorgym.agents.trajectory import Trajectory, read_trajectories
from mentorgym.errors import ConfigError
from mentorgym.training import sft
from mentorgym.training import trainer as T
from mentorgym.training.data import BuildStats, Example, dedupe, examples_from_trajectories


@dataclass
class Config:
    env_id: str = "mentorgym/Sokoban-v0"
    """The registered env to train on and evaluate in."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for `mentorgym.make(env_id, **env_kwargs)`."""
    student: str = "tiny"
    """`tiny` (the tiny Qwen3-shaped model built from scratch), or a local path / hub id."""
    tiny_size: str = "tiny"
    """Size of a from-scratch tiny student: `tiny` or `small`."""
    teacher: str = "expert"
    """Agent spec of the labeling teacher: `expert`, `openai:URL#MODEL`, `hf:PATH`, ..."""
    iterations: int = 6
    """DAgger iterations (rollout, label, aggregate, train, evaluate)."""
    episodes: int = 64
    """Training episodes per iteration; iteration i uses seeds seed + i*episodes + [0, episodes)."""
    beta_0: float = 1.0
    """Probability that the teacher writes a turn in iteration 0."""
    beta_schedule: str = "linear"
    """How beta decays to 0: `linear`, `cosine`, `exponential`, `step` or `constant`."""
    beta_decay_iters: int = 3
    """Iterations over which beta reaches 0 (`exponential`: beta halves every this/3 iterations)."""
    rollout_temperature: float = 1.0
    """Student sampling temperature during DAgger rollouts."""
    window: int = 0
    """Aggregate only the labels of the last `window` iterations (0: all of them)."""
    dedupe: bool = False
    """Drop repeated (context, label) examples from the aggregate."""
    max_labels: int = 0
    """Cap on the aggregate, keeping the newest labels (0: no cap)."""
    old_weight: float = 1.0
    """Loss weight factor per iteration of age (1: all labels equal; 0.5 halves each older one)."""
    student_labels_only: bool = False
    """Train only on states where the student acted (plus all states in iteration 0)."""
    seed: int = 0
    """Seeds the model init, data order and the training env seeds."""
    max_seq_len: int = 1024
    """Longest example in tokens; longer contexts lose old messages (see data.py)."""
    context_turns: int = 0
    """The student sees only the last N observations (1: the current one; 0: all), in
    training and in rollouts alike."""
    system_prompt: bool = True
    """Keep the env's system prompt in the student's context."""
    steps_per_iteration: int = 100
    """Optimizer steps on the aggregate after each iteration's rollouts."""
    batch_size: int = 32
    """Examples per micro-batch (global across processes)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    lr_schedule: str = "iteration"
    """`iteration`: a fresh AdamW, warmup and cosine decay in each iteration's training;
    `run`: one AdamW and one warmup + cosine over all iterations' steps."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices."""
    warmup_steps: int = 10
    """Linear warmup steps (at the start of each iteration, or of the run with `lr_schedule: run`)."""
    min_lr_ratio: float = 0.1
    """Cosine decay floor as a fraction of `lr`."""
    grad_clip: float = 1.0
    """Gradient norm clip."""
    precision: str = "auto"
    """`auto` (bf16 autocast on CUDA, fp32 on CPU), `bf16` or `fp32`."""
    model_dtype: str = "float32"
    """Dtype of the student's weights: `float32` or `bfloat16` (large models)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    strategy: str = "ddp"
    """Under torchrun: `ddp` or `fsdp` (FSDP2 fully_shard)."""
    device: str = "auto"
    """`auto`, `cpu`, `cuda`, `cuda:1`, ..."""
    save_every: int = 50
    """Step checkpoint every N optimizer steps within an iteration (0: only at its end)."""
    eval_episodes: int = 100
    """Held-out episodes after every iteration (0: skip)."""
    eval_seed: int = 1_000_000
    """First held-out seed; keep it above seed + iterations * episodes."""
    eval_temperature: float = 0.0
    """Student temperature at evaluation (0: greedy)."""
    max_new_tokens: int = 64
    """Longest assistant turn the student may write."""
    concurrency: int = 32
    """Episodes stepped at once by the rollout engine (policy calls are batched)."""
    progress: bool = True
    """Show progress bars."""

    @property
    def steps(self) -> int:
        return self.steps_per_iteration

    def validate(self) -> None:
        sft.check_common(self)
        if self.iterations <= 0 or self.episodes <= 0:
            raise ConfigError("iterations and episodes must be > 0")
        if self.beta_schedule not in SCHEDULES:
            raise ConfigError(
                f"beta_schedule {self.beta_schedule!r}: use one of {sorted(SCHEDULES)}"
            )
        if not 0.0 <= self.beta_0 <= 1.0:
            raise ConfigError(f"beta_0 must be in [0, 1], got {self.beta_0}")
        if self.beta_decay_iters <= 0:
            raise ConfigError("beta_decay_iters must be > 0")
        if self.lr_schedule not in ("iteration", "run"):
            raise ConfigError(f"lr_schedule {self.lr_schedule!r}: use iteration or run")
        if self.old_weight < 0 or self.window < 0 or self.max_labels < 0:
            raise ConfigError("old_weight, window and max_labels must be >= 0")


def _linear(i: int, n: int) -> float:
    return max(0.0, 1.0 - i / n)


def _cosine(i: int, n: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(i / n, 1.0)))


def _exponential(i: int, n: int) -> float:
    # Halves every n/3 iterations and is cut to 0 at n, so "decay length" means the same thing.
    return 0.0 if i >= n else 0.5 ** (3 * i / n)


def _step(i: int, n: int) -> float:
    return 1.0 if i < n else 0.0


def _constant(i: int, n: int) -> float:
    return 1.0


SCHEDULES = {
    "linear": _linear,
    "cosine": _cosine,
    "exponential": _exponential,
    "step": _step,
    "constant": _constant,
}


def beta_at(cfg: Config, i: int) -> float:
    """The teacher's per-turn probability in iteration i (beta_0 at i = 0, 0 from the decay length on)."""
    return cfg.beta_0 * SCHEDULES[cfg.beta_schedule](i, cfg.beta_decay_iters)


def iter_dir(run_dir: Path, i: int) -> Path:
    return run_dir / f"iter_{i:02d}"


def collect(s: sft.Setup, cfg: Config, run_dir: Path, i: int) -> list[Trajectory]:
    """Iteration i's mixture rollouts, every state labeled by the teacher (main rank only)."""
    from mentorgym.agents.rollout import run
    from mentorgym.agents.specs import load_policy

    out = iter_dir(run_dir, i) / "rollouts.jsonl"
    beta = beta_at(cfg, i)
    teacher = load_policy(cfg.teacher, temperature=0.0, max_new_tokens=cfg.max_new_tokens)
    path = s.path
    model = s.model
    if s.d.enabled and s.opt.strategy == "fsdp":
        # A sharded model cannot generate on one rank: gather a full copy for the rollouts.
        path = str(iter_dir(run_dir, i) / "student")
        T.save_model(s.model, s.tok, Path(path), s.d)
        model = None
    if not s.d.is_main:
        return []
    if model is None:
        from mentorgym.agents.hf import HFPolicy

        student = HFPolicy(
            path,
            temperature=cfg.rollout_temperature,
            top_p=1.0,
            max_new_tokens=cfg.max_new_tokens,
            context_turns=cfg.context_turns,
            system_prompt=cfg.system_prompt,
            device=str(s.device),
            seed=cfg.seed + i,
        )
    else:
        model.eval()
        student = sft.student_policy(model, s.tok, cfg, path, s.device, cfg.rollout_temperature)
    trajs = run(
        cfg.env_id,
        student,
        cfg.episodes,
        seed=cfg.seed + i * cfg.episodes,
        env_kwargs=cfg.env_kwargs,
        teacher=teacher,
        beta=beta,
        relabel=True,
        out=out,
        resume=True,
        concurrency=cfg.concurrency,
        progress=cfg.progress,
        mixture_seed=cfg.seed * 1000 + i,
    )
    s.model.train()
    return trajs


def aggregate(
    cfg: Config, run_dir: Path, i: int, tok: Any
) -> tuple[list[Example], BuildStats, dict[str, Any]]:
    """The training set after iteration i: labels of iterations (i - window, i], weighted by age."""
    first = max(0, i - cfg.window + 1) if cfg.window else 0
    examples: list[Example] = []
    total = BuildStats()
    info: dict[str, Any] = {}
    for j in range(first, i + 1):
        trajs = list(read_trajectories(iter_dir(run_dir, j) / "rollouts.jsonl"))
        if cfg.student_labels_only and j > 0:
            for t in trajs:
                t.turns = [turn for turn in t.turns if turn.actor == "student"] or t.turns[:0]
        exs, stats = examples_from_trajectories(
            trajs,
            tok,
            max_seq_len=cfg.max_seq_len,
            target="teacher",
            weight=cfg.old_weight ** (i - j),
            meta={"iteration": j},
            last_turns=cfg.context_turns,
            system_prompt=cfg.system_prompt,
        )
        total.add(stats)
        examples += exs
        if j == i:
            turns = [turn for t in trajs for turn in t.turns]
            info = {
                "new_labels": len(exs),
                "student_turn_frac": sum(turn.actor == "student" for turn in turns)
                / max(len(turns), 1),
                "rollout_success": sum(t.success for t in trajs) / max(len(trajs), 1),
            }
    if cfg.dedupe:
        examples = dedupe(examples[::-1])[::-1]  # keep the newest copy of each example
    if cfg.max_labels:
        examples = examples[-cfg.max_labels :]
    return examples, total, info


def _load_state(ckpt: Path) -> T.RunState:
    return T.RunState(**json.loads((ckpt / "state.json").read_text()))


def train(cfg: Config, run_dir: Path, resume: bool) -> Path:
    """DAgger end to end; returns `RUN/final` (the student in HF format)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    s = sft.setup(cfg, run_dir)
    t0 = time.time()
    ckpt = T.latest_checkpoint(run_dir) if resume else None
    state = T.RunState(extra={"iteration": 0, "phase": "collect"})
    labels_total = 0
    # `lr_schedule: run` keeps one AdamW across iterations; each iteration makes its own otherwise.
    optimizer = T.make_optimizer(s.model, s.opt) if cfg.lr_schedule == "run" else None
    if ckpt is not None:
        state = _load_state(ckpt)
        it = state.extra["iteration"]
        s.metrics.truncate(
            lambda r: (
                (r.get("kind") == "train" and r["step"] <= state.global_step)
                or (r.get("kind") == "eval" and r["iteration"] < it)
            )
        )
        labels_total = int(state.extra.get("labels_total", 0))
        if state.extra["phase"] == "collect" and optimizer is not None:
            # Between iterations, one schedule over the run: weights and AdamW carry over.
            T.load_checkpoint(ckpt, s.model, optimizer, T.make_scheduler(optimizer, s.opt, 1), s.d)
            ckpt = None
        elif state.extra["phase"] == "collect":
            # Between iterations: only the weights carry over (each iteration has a fresh optimizer).
            T.load_weights(ckpt / "model", s.model)
            ckpt = None
        if s.d.is_main:
            print(
                f"resuming from {run_dir}: iteration {it}, phase {state.extra['phase']}, step {state.step}"
            )
    if s.d.is_main:
        print(
            f"{'iter':>4} {'beta':>5} {'labels':>7} {'agg':>6} {'stud%':>6} {'roll':>5} {'loss':>7} {'heldout':>8} {'time':>6}"
        )

    for i in range(state.extra["iteration"], cfg.iterations):
        beta = beta_at(cfg, i)
        if state.extra["phase"] == "collect":
            collect(s, cfg, run_dir, i)
            if s.d.enabled:
                dist.barrier()
        examples, stats, info = aggregate(cfg, run_dir, i, s.tok)
        if s.d.is_main and (stats.truncated or stats.dropped):
            print(stats.log(cfg.max_seq_len))
        if state.extra["phase"] == "collect":
            labels_total += info["new_labels"]
            state = T.RunState(
                global_step=state.global_step,
                extra={"iteration": i, "phase": "train", "labels_total": labels_total},
            )
        state = sft.sft_phase(
            s,
            cfg,
            run_dir,
            examples,
            n_steps=cfg.steps_per_iteration,
            state=state,
            resume_ckpt=ckpt,
            data_seed=cfg.seed * 1000 + i,
            extra_metrics={"iteration": i},
            desc=f"iter {i}",
            optimizer=optimizer,
            lr_span=(
                (i * cfg.steps_per_iteration, cfg.iterations * cfg.steps_per_iteration)
                if optimizer is not None
                else None
            ),
        )
        ckpt = None
        record: dict[str, Any] = {
            "kind": "eval",
            "iteration": i,
            "beta": beta,
            "step": state.global_step,
            "aggregate": len(examples),
            "labels_total": labels_total,
            **info,
        }
        last_loss = next(
            (r["loss"] for r in reversed(s.metrics.records) if r.get("kind") == "train"),
            float("nan"),
        )
        if s.d.is_main:
            if cfg.eval_episodes > 0:
                record.update(
                    sft.evaluate(
                        s.model, s.tok, cfg, s.path, s.device, iter_dir(run_dir, i) / "eval.jsonl"
                    )
                )
            s.metrics.log(record)
            s.metrics.plot(run_dir / "curves.png")
            held = f"{record['success_rate']:.3f}" if "success_rate" in record else "-"
            print(
                f"{i:>4} {beta:>5.2f} {labels_total:>7} {len(examples):>6} {100 * info['student_turn_frac']:>5.0f}% "
                f"{info['rollout_success']:>5.2f} {last_loss:>7.4f} {held:>8} {time.time() - t0:>5.0f}s",
                flush=True,
            )
        if s.d.enabled:
            dist.barrier()
        state = T.RunState(
            global_step=state.global_step,
            extra={"iteration": i + 1, "phase": "collect", "labels_total": labels_total},
        )
        # The iteration-boundary checkpoint: the weights, and the AdamW when it carries over.
        _boundary_checkpoint(s, run_dir, state, optimizer)

    final = run_dir / "final"
    T.save_model(s.model, s.tok, final, s.d, sft.policy_card(cfg))
    if s.d.is_main:
        print(f"final student: {final}  (evaluate: mentorgym eval {cfg.env_id} --agent hf:{final})")
    return final


def _boundary_checkpoint(
    s: sft.Setup, run_dir: Path, state: T.RunState, optimizer: torch.optim.Optimizer | None
) -> None:
    optimizer = optimizer if optimizer is not None else T.make_optimizer(s.model, s.opt)
    scheduler = T.make_scheduler(optimizer, s.opt, 1)
    T.save_checkpoint(run_dir, s.model, s.tok, optimizer, scheduler, state, s.d)


def dry_run(cfg: Config) -> list[str]:
    """Validate the config and build everything but the weights; returns report lines."""
    lines = sft.check_setup(cfg)
    betas = ", ".join(f"{beta_at(cfg, i):.2f}" for i in range(cfg.iterations))
    lines.append(
        f"dagger: {cfg.iterations} iterations x {cfg.episodes} episodes, beta per iteration: {betas}"
    )
    last_train_seed = cfg.seed + cfg.iterations * cfg.episodes - 1
    lines.append(
        f"seeds: training {cfg.seed}..{last_train_seed}, held-out {cfg.eval_seed}..{cfg.eval_seed + cfg.eval_episodes - 1}"
    )
    return lines
