"""SFT / behaviour cloning: cross-entropy on teacher turns.

The data is either a trajectories JSONL (`trajectories: PATH`) or `episodes` teacher
episodes collected here with the rollout engine (teacher = any agent spec; `expert` is
the env's oracle). Every teacher turn becomes one example (see `training/data.py`);
`max_labels` caps the number of labels, which is how BC and DAgger are compared at an
equal teacher budget. After training, the pure student is evaluated on held-out seeds
(from `eval_seed`, disjoint from the training seeds) and saved to `RUN/final`.

Run: `mentorgym train configs/sokoban_bc.yaml`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist

from mentorgym.agents.rollout import episode_order
from mentorgym.agents.trajectory import BadLines, Trajectory, read_trajectories
from mentorgym.errors import ConfigError
from mentorgym.training import checkpoint, trainer
from mentorgym.training import student as student_lib
from mentorgym.training.config import SupervisedConfig
from mentorgym.training.data import Example, examples_from_trajectories
from mentorgym.training.student import Student
from mentorgym.training.trainer import Phase


@dataclass
class Config(SupervisedConfig):
    trajectories: str | None = None
    """A trajectories JSONL to clone instead of collecting teacher episodes (written by
    `teacher`, whose tokenizer decides whether its token ids are reused)."""
    episodes: int = 200
    """Teacher episodes to collect (training seeds `seed .. seed + episodes - 1`)."""
    max_labels: int = 0
    """Keep at most this many teacher labels (0: all), in episode order."""
    steps: int = 300
    """Optimizer steps."""

    def validate(self) -> None:
        super().validate()
        if self.steps <= 0:
            raise ConfigError(f"steps must be > 0, got {self.steps}")
        if self.trajectories is None and self.episodes <= 0:
            raise ConfigError("episodes must be > 0 when no `trajectories` file is given")
        self.check_eval_seed(self.episodes)


def collect_teacher(cfg: Config, out: Path) -> list[Trajectory]:
    """Teacher episodes on training seeds, appended to `out` (resumable episode by episode)."""
    from mentorgym.agents.rollout import run
    from mentorgym.agents.specs import load_policy

    teacher = load_policy(cfg.teacher, temperature=0.0, max_new_tokens=cfg.max_new_tokens)
    env_id, env_kwargs = cfg.rollout_env()
    return run(
        env_id,
        teacher,
        cfg.episodes,
        seed=cfg.seed,
        env_kwargs=env_kwargs,
        out=out,
        resume=True,
        concurrency=cfg.concurrency,
        progress=cfg.progress,
    )


def fit(
    student: Student, cfg: SupervisedConfig, run_dir: Path, examples: list[Example], phase: Phase
) -> trainer.OpenPhase:
    """`phase.n_steps` cross-entropy steps on `examples`, a checkpoint every `save_every`
    steps and at the end. Returns the optimizer, the schedule and the state it leaves."""
    run = trainer.open_phase(student, cfg, examples, phase)
    state, model, d = run.state, student.model, student.dist
    bar = trainer.progress_bar(student, cfg, phase, state)
    while state.step < phase.n_steps:
        # cross-entropy on `grad_accum` micro-batches of teacher labels, then one AdamW step
        run.optimizer.zero_grad(set_to_none=True)
        loss, tokens = trainer.cross_entropy_step(
            model, run.batches, state, cfg, student.tok.pad_token_id, student.device
        )
        grad_norm, lr = trainer.optimizer_step(model, run.optimizer, run.scheduler, cfg.grad_clip)
        state.step += 1
        state.global_step += 1
        loss, tokens = trainer.mean_over_ranks(loss, tokens, d, student.device)
        record = trainer.train_record(state, loss, lr, grad_norm, tokens, **phase.extra_metrics)
        student.metrics.log(record)
        bar.update(1, loss=loss)
        if trainer.checkpoint_due(state.step, cfg.save_every, phase.n_steps):
            save_phase(student, run_dir, run)
    bar.close()
    save_phase(student, run_dir, run)
    return run


def save_phase(student: Student, run_dir: Path, run: trainer.OpenPhase) -> None:
    """A step checkpoint of a supervised phase (weights, AdamW, schedule, data position)."""
    s = student
    checkpoint.save_checkpoint(
        run_dir, s.model, s.tok, run.optimizer, run.scheduler, run.state, s.dist
    )


def train(cfg: Config, run_dir: Path, resume: bool) -> Path:
    """Behaviour cloning end to end; returns `RUN/final` (the student in HF format)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    student = student_lib.setup(cfg, run_dir, cfg.strategy)
    t0 = time.time()
    # 1. the teacher's episodes: collected here, or read from a file
    data_path = Path(cfg.trajectories) if cfg.trajectories else run_dir / "teacher.jsonl"
    if cfg.trajectories is None:
        if student.dist.is_main:
            collect_teacher(cfg, data_path)
        if student.dist.enabled:
            dist.barrier()
    elif not data_path.is_file():
        raise ConfigError(
            f"trajectories {str(data_path)!r} does not exist; record some with `mentorgym rollout --out`"
        )
    bad = BadLines()
    trajs = read_trajectories(data_path, on_bad_line=cfg.bad_lines, bad=bad)  # type: ignore[arg-type]
    trajs = sorted(trajs, key=episode_order)  # file order is the order episodes ended
    if cfg.trajectories is None:
        trajs = trajs[: cfg.episodes]
    # 2. one example per teacher turn, in the student's tokens
    examples, stats = examples_from_trajectories(
        trajs,
        student.tok,
        max_seq_len=cfg.max_seq_len,
        target="teacher",
        last_turns=cfg.context_turns,
        system_prompt=cfg.system_prompt,
        foreign_ids=student_lib.teacher_shares_tokenizer(cfg.teacher, student.tok),
    )
    if cfg.max_labels:
        examples = examples[: cfg.max_labels]
    if student.dist.is_main:
        print(stats.log(cfg.max_seq_len) + f"; training on {len(examples)} labels")
    # 3. fit: cross-entropy steps, resumed from the latest step checkpoint
    ckpt = checkpoint.latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        done = checkpoint.read_run_state(ckpt)
        student.metrics.truncate(
            lambda r: r.get("kind") == "train" and r["step"] <= done.global_step
        )
        if student.dist.is_main:
            print(f"resuming from {ckpt} (step {done.step})")
    phase = Phase(n_steps=cfg.steps, data_seed=cfg.seed, resume_from=ckpt, desc="sft")
    state = fit(student, cfg, run_dir, examples, phase).state
    # 4. the final student, evaluated on held-out seeds
    final = student_lib.save_final(student, cfg, run_dir)
    if student.dist.is_main:
        result: dict[str, Any] = {
            "kind": "eval",
            "iteration": 0,
            "labels": len(examples),
            "step": state.global_step,
            "bad_lines": bad.count,
            "unlabeled_turns": stats.unlabeled,
        }
        if cfg.eval_episodes > 0:
            summary = student_lib.evaluate(student, cfg, run_dir / "eval.jsonl")
            result.update(summary)
            print(
                f"bc: labels={len(examples)} steps={state.global_step} "
                f"held-out success={summary['success_rate']:.3f} ({summary['episodes']} episodes) "
                f"[{time.time() - t0:.0f}s]"
            )
        student.metrics.log(result)
        student.metrics.plot(run_dir / "curves.png")
    if student.dist.enabled:
        dist.barrier()
    return final


def dry_run(cfg: Config) -> list[str]:
    """Validate the config and build everything but the weights; returns report lines."""
    return student_lib.check_setup(cfg, cfg.teacher)
