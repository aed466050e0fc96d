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

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mentorgym.agents.hf import PolicyCard
from mentorgym.agents.tiny import SIZES
from mentorgym.agents.trajectory import Trajectory, read_trajectories
from mentorgym.errors import ConfigError
from mentorgym.training import trainer as T
from mentorgym.training.data import (
    BuildStats,
    Example,
    examples_from_trajectories,
    iterate_batches,
)

log = logging.getLogger(__name__)


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
    """Agent spec of the teacher: `expert`, `openai:URL#MODEL`, `hf:PATH`, ..."""
    trajectories: str | None = None
    """A trajectories JSONL to clone instead of collecting teacher episodes."""
    episodes: int = 200
    """Teacher episodes to collect (training seeds `seed .. seed + episodes - 1`)."""
    max_labels: int = 0
    """Keep at most this many teacher labels (0: all), in episode order."""
    seed: int = 0
    """Seeds the model init, data order and the first training env seed."""
    max_seq_len: int = 1024
    """Longest example in tokens; longer contexts lose old messages (see data.py)."""
    context_turns: int = 0
    """The student sees only the last N observations (1: the current one; 0: all), in
    training and in rollouts alike."""
    system_prompt: bool = True
    """Keep the env's system prompt in the student's context."""
    steps: int = 300
    """Optimizer steps."""
    batch_size: int = 32
    """Examples per micro-batch (global across processes)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices."""
    warmup_steps: int = 20
    """Linear warmup steps before the cosine decay."""
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
    save_every: int = 100
    """Checkpoint every N optimizer steps (0: only at the end)."""
    eval_episodes: int = 100
    """Held-out episodes for the final student evaluation (0: skip)."""
    eval_seed: int = 1_000_000
    """First held-out seed; training seeds start at `seed`, so keep them apart."""
    eval_temperature: float = 0.0
    """Sampling temperature of the student at evaluation (0: greedy)."""
    max_new_tokens: int = 64
    """Longest assistant turn the student may write."""
    concurrency: int = 32
    """Episodes stepped at once by the rollout engine (policy calls are batched)."""
    progress: bool = True
    """Show progress bars."""

    def validate(self) -> None:
        check_common(self)
        if self.trajectories is None and self.episodes <= 0:
            raise ConfigError("episodes must be > 0 when no `trajectories` file is given")


def check_common(cfg: Any) -> None:
    """Range checks shared by the SFT and DAgger configs."""
    for name in (
        "steps",
        "batch_size",
        "grad_accum",
        "max_seq_len",
        "max_new_tokens",
        "concurrency",
    ):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name} must be > 0, got {getattr(cfg, name)}")
    if cfg.precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"precision {cfg.precision!r}: use auto, bf16 or fp32")
    if cfg.model_dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"model_dtype {cfg.model_dtype!r}: use float32 or bfloat16")
    if cfg.strategy not in ("ddp", "fsdp"):
        raise ConfigError(f"strategy {cfg.strategy!r}: use ddp or fsdp")
    if cfg.tiny_size not in SIZES:
        raise ConfigError(f"tiny_size {cfg.tiny_size!r}: use one of {sorted(SIZES)}")
    if cfg.student != "tiny" and cfg.student.startswith(("openai:", "expert", "random", "replay:")):
        raise ConfigError(
            f"student {cfg.student!r} is not trainable; use tiny, a local path or a hub id"
        )
    if cfg.eval_seed < cfg.seed + getattr(cfg, "episodes", 0) * max(
        getattr(cfg, "iterations", 1), 1
    ):
        raise ConfigError(
            f"eval_seed {cfg.eval_seed} overlaps the training seeds starting at {cfg.seed}; "
            "raise eval_seed (default 1000000)"
        )


# --- student ----------------------------------------------------------------------------------


def student_path(cfg: Any, run_dir: Path, d: T.Dist) -> str:
    """Where the student's initial weights are: a fresh tiny model in `RUN/init`, or `student`."""
    hf_prefix = "hf:"
    spec = cfg.student[len(hf_prefix) :] if cfg.student.startswith(hf_prefix) else cfg.student
    if spec != "tiny":
        return spec
    init = run_dir / "init"
    if d.is_main and not (init / "config.json").exists():
        from mentorgym.agents.tiny import build_tiny

        build_tiny(init, size=cfg.tiny_size, env_ids=[cfg.env_id], seed=cfg.seed)
    if d.enabled:
        dist.barrier()
    return str(init)


def load_student(path: str, cfg: Any, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """The trainable model and its tokenizer from a path or hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if cfg.model_dtype == "bfloat16" else torch.float32
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as e:
        raise ConfigError(
            f"student {path!r} could not be loaded ({e}); give a local Hugging Face folder, "
            "a hub id on a machine that reaches the hub, or `tiny`"
        ) from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def policy_card(cfg: Any) -> PolicyCard:
    """What `hf:RUN/final` needs to act as the student did: its window and evaluation settings."""
    return PolicyCard(
        context_turns=cfg.context_turns,
        system_prompt=cfg.system_prompt,
        temperature=cfg.eval_temperature,
        max_new_tokens=cfg.max_new_tokens,
    )


def student_policy(
    model: torch.nn.Module, tok: Any, cfg: Any, path: str, device: torch.device, temperature: float
) -> Any:
    """The in-training student as a Policy for rollouts, sharing the live weights."""
    from mentorgym.agents.hf import HFPolicy

    return HFPolicy(
        path,
        temperature=temperature,
        top_p=1.0,
        max_new_tokens=cfg.max_new_tokens,
        context_turns=cfg.context_turns,
        system_prompt=cfg.system_prompt,
        device=str(device),
        seed=cfg.seed,
        model=T.unwrap(model),
        tokenizer=tok,
    )


def evaluate(
    model: torch.nn.Module, tok: Any, cfg: Any, path: str, device: torch.device, out: Path | None
) -> dict[str, Any]:
    """The pure student (no teacher) on `eval_episodes` held-out seeds from `eval_seed`."""
    from mentorgym.agents.rollout import run, summarize

    was_training = model.training
    model.eval()
    policy = student_policy(model, tok, cfg, path, device, cfg.eval_temperature)
    trajs = run(
        cfg.env_id,
        policy,
        cfg.eval_episodes,
        seed=cfg.eval_seed,
        env_kwargs=cfg.env_kwargs,
        out=out,
        concurrency=cfg.concurrency,
        progress=cfg.progress,
    )
    model.train(was_training)
    return summarize(trajs)


def collect_teacher(cfg: Config, out: Path) -> list[Trajectory]:
    """Teacher episodes on training seeds, appended to `out` (resumable episode by episode)."""
    from mentorgym.agents.rollout import run
    from mentorgym.agents.specs import load_policy

    teacher = load_policy(cfg.teacher, temperature=0.0, max_new_tokens=cfg.max_new_tokens)
    return run(
        cfg.env_id,
        teacher,
        cfg.episodes,
        seed=cfg.seed,
        env_kwargs=cfg.env_kwargs,
        out=out,
        resume=True,
        concurrency=cfg.concurrency,
        progress=cfg.progress,
    )


# --- the SFT phase, shared with DAgger --------------------------------------------------------


@dataclass
class Setup:
    """Everything a training phase needs, built once per run."""

    d: T.Dist
    device: torch.device
    opt: T.Optim
    model: torch.nn.Module
    tok: Any
    path: str
    metrics: T.Metrics


def setup(cfg: Any, run_dir: Path) -> Setup:
    """Join torchrun, seed, build or load the student, prepare it for the chosen strategy."""
    d = T.init_distributed()
    T.seed_everything(cfg.seed)
    device = T.pick_device(d, cfg.device)
    opt = T.Optim.from_config(cfg)
    path = student_path(cfg, run_dir, d)
    model, tok = load_student(path, cfg, device)
    model = T.prepare_model(model, d, device, opt)
    n_params = sum(p.numel() for p in T.unwrap(model).parameters())
    if d.is_main:
        print(
            f"student: {path} ({n_params / 1e6:.2f}M parameters) on {device} x{d.world_size} ({opt.strategy})"
        )
    return Setup(
        d, device, opt, model, tok, path, T.Metrics(run_dir / "metrics.jsonl", enabled=d.is_main)
    )


def sft_phase(
    s: Setup,
    cfg: Any,
    run_dir: Path,
    examples: list[Example],
    *,
    n_steps: int,
    state: T.RunState,
    resume_ckpt: Path | None,
    data_seed: int,
    extra_metrics: dict[str, Any] | None = None,
    desc: str = "sft",
    optimizer: torch.optim.Optimizer | None = None,
    lr_span: tuple[int, int] | None = None,
) -> T.RunState:
    """`n_steps` optimizer steps on `examples` with a fresh AdamW and schedule (or restored).

    `optimizer` carries an AdamW over from an earlier phase; `lr_span = (offset, total)` places
    this phase's steps at `offset` of one schedule `total` steps long (default: its own)."""
    optimizer = optimizer if optimizer is not None else T.make_optimizer(s.model, s.opt)
    offset, total = lr_span or (0, n_steps)
    scheduler = T.make_scheduler(optimizer, s.opt, total, offset)
    if resume_ckpt is not None:
        state = T.load_checkpoint(resume_ckpt, s.model, optimizer, scheduler, s.d)
    global_batch = cfg.batch_size
    if global_batch % s.d.world_size:
        raise ConfigError(
            f"batch_size {global_batch} must divide by the {s.d.world_size} processes"
        )
    batches = iterate_batches(
        examples,
        global_batch,
        seed=data_seed,
        start_batch=state.batch,
        rank=s.d.rank,
        world_size=s.d.world_size,
    )

    def checkpoint(st: T.RunState) -> None:
        T.save_checkpoint(run_dir, s.model, s.tok, optimizer, scheduler, st, s.d)

    state = T.train_steps(
        s.model,
        optimizer,
        scheduler,
        batches,
        n_steps=n_steps,
        state=state,
        opt=s.opt,
        pad_id=s.tok.pad_token_id,
        device=s.device,
        d=s.d,
        metrics=s.metrics,
        save_every=cfg.save_every,
        checkpoint=checkpoint,
        extra_metrics=extra_metrics,
        progress=cfg.progress,
        desc=desc,
    )
    checkpoint(state)
    return state


def load_examples(
    cfg: Config, tok: Any, trajs: list[Trajectory]
) -> tuple[list[Example], BuildStats]:
    examples, stats = examples_from_trajectories(
        trajs,
        tok,
        max_seq_len=cfg.max_seq_len,
        target="teacher",
        last_turns=cfg.context_turns,
        system_prompt=cfg.system_prompt,
    )
    if cfg.max_labels:
        examples = examples[: cfg.max_labels]
    return examples, stats


def train(cfg: Config, run_dir: Path, resume: bool) -> Path:
    """Behaviour cloning end to end; returns `RUN/final` (the student in HF format)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    s = setup(cfg, run_dir)
    t0 = time.time()
    data_path = Path(cfg.trajectories) if cfg.trajectories else run_dir / "teacher.jsonl"
    if cfg.trajectories is None:
        if s.d.is_main:
            collect_teacher(cfg, data_path)
        if s.d.enabled:
            dist.barrier()
    elif not data_path.is_file():
        raise ConfigError(
            f"trajectories {str(data_path)!r} does not exist; record some with `mentorgym rollout --out`"
        )
    trajs = list(read_trajectories(data_path))
    if cfg.trajectories is None:
        trajs = trajs[: cfg.episodes]
    examples, stats = load_examples(cfg, s.tok, trajs)
    if s.d.is_main:
        print(stats.log(cfg.max_seq_len) + f"; training on {len(examples)} labels")

    ckpt = T.latest_checkpoint(run_dir) if resume else None
    state = T.RunState()
    if ckpt is not None:
        done = T.RunState(**json.loads((ckpt / "state.json").read_text()))
        s.metrics.truncate(lambda r: r.get("kind") == "train" and r["step"] <= done.global_step)
        if s.d.is_main:
            print(f"resuming from {ckpt} (step {done.step})")
    state = sft_phase(
        s,
        cfg,
        run_dir,
        examples,
        n_steps=cfg.steps,
        state=state,
        resume_ckpt=ckpt,
        data_seed=cfg.seed,
    )
    final = run_dir / "final"
    T.save_model(s.model, s.tok, final, s.d, policy_card(cfg))
    if s.d.is_main:
        result: dict[str, Any] = {
            "kind": "eval",
            "iteration": 0,
            "labels": len(examples),
            "step": state.global_step,
        }
        if cfg.eval_episodes > 0:
            summary = evaluate(s.model, s.tok, cfg, str(final), s.device, run_dir / "eval.jsonl")
            result.update(summary)
            print(
                f"bc: labels={len(examples)} steps={state.global_step} "
                f"held-out success={summary['success_rate']:.3f} ({summary['episodes']} episodes) "
                f"[{time.time() - t0:.0f}s]"
            )
        s.metrics.log(result)
        s.metrics.plot(run_dir / "curves.png")
    if s.d.enabled:
        dist.barrier()
    return final


def dry_run(cfg: Any) -> list[str]:
    """Validate the config and build everything but the weights; returns report lines."""
    return check_setup(cfg)


def check_setup(cfg: Any) -> list[str]:
    """Env, teacher and student checks that need no weights; what cannot be checked is said."""
    import gymnasium

    import mentorgym  # noqa: F401  (registers the built-in envs)

    lines: list[str] = []
    try:
        spec = gymnasium.spec(cfg.env_id)
    except gymnasium.error.Error as e:
        raise ConfigError(f"env_id {cfg.env_id!r}: {e}") from e
    lines.append(
        f"env: {spec.id} (max_episode_steps={spec.max_episode_steps}) kwargs={cfg.env_kwargs}"
    )
    try:
        from mentorgym import make

        env = make(cfg.env_id, **cfg.env_kwargs)
        env.close()
        lines.append("env: constructed")
    except TypeError as e:
        raise ConfigError(f"env_kwargs {cfg.env_kwargs} do not fit {cfg.env_id}: {e}") from e
    except Exception as e:
        # e.g. SWE needs a Docker engine and a reachable task set: offline that is reported
        # as skipped (with the env's own message), and everything else is still validated.
        lines.append(f"env: SKIPPED construction ({type(e).__name__}: {e})")
    teacher = getattr(cfg, "teacher", None)
    if teacher:
        from mentorgym.agents.specs import load_policy

        kind = teacher.partition(":")[0]
        if kind in ("hf", "tiny", "vllm"):
            lines.append(f"teacher: {teacher} (model backend; weights not loaded in a dry run)")
        else:
            policy = load_policy(teacher)
            lines.append(
                f"teacher: {getattr(policy, 'name', teacher)} (spec parsed; no request sent)"
            )
    if cfg.student == "tiny":
        lines.append(f"student: a fresh tiny model ({cfg.tiny_size}) would be built in RUN/init")
    else:
        path = cfg.student.removeprefix("hf:")
        try:
            from transformers import AutoConfig

            mc = AutoConfig.from_pretrained(path)
            lines.append(
                f"student: {path} config loaded ({mc.model_type}, {getattr(mc, 'num_hidden_layers', '?')} layers, "
                f"hidden {getattr(mc, 'hidden_size', '?')})"
            )
        except Exception as e:
            lines.append(
                f"student: SKIPPED loading the model config of {path!r} (not reachable here: {type(e).__name__})"
            )
    return lines
