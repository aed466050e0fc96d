"""The trainer: a train-steps loop over a batch iterator, checkpoints, metrics, plots.

A small set of functions, no class tower: each algorithm file builds the model, the
optimizer and the scheduler with the helpers here. `train_steps` is the supervised loop
(SFT and DAgger); the on-policy algorithms write their loop themselves.

- Device: CUDA with bf16 autocast where present, else CPU in fp32.
- Optimizer: AdamW; schedule: linear warmup then cosine decay to `min_lr_ratio * lr`;
  gradient clipping; gradient accumulation; optional gradient checkpointing.
- Multi-process (one machine, `torchrun --nproc_per_node N`): DDP, or FSDP2
  (`torch.distributed.fsdp.fully_shard`) for models that do not fit one device. Every
  rank reads the same global batch and takes its share, so the result does not depend
  on how many processes split it (up to float summation order).
- Checkpoints: `RUN/checkpoints/step_XXXXXXX/` with the model and tokenizer
  (`save_pretrained`, safetensors), optimizer, scheduler, RNG states (python, numpy,
  torch) per rank and the data position in `state.json`; written to a temporary folder
  and renamed, so a kill mid-save leaves the previous checkpoint intact. Resume is
  exact on CPU with a fixed seed.
- Metrics: one JSON object per line in `RUN/metrics.jsonl` (and to the trackers named in
  `report_to`), progress (a tqdm bar on a terminal, a line per phase in a log), and
  `RUN/curves.png` (matplotlib, Agg).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from mentorgym.agents.hf import PolicyCard, write_policy_card
from mentorgym.errors import ConfigError
from mentorgym.training.config import CoreConfig, SupervisedConfig
from mentorgym.training.data import Example, collate, iterate_batches
from mentorgym.training.losses import masked_cross_entropy
from mentorgym.training.progress import Progress
from mentorgym.training.trackers import Trackers

if TYPE_CHECKING:
    from mentorgym.training.student import Student


@dataclass
class Dist:
    """Where this process sits in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> Dist:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(d.local_rank)
        dist.init_process_group(backend=backend)
    return d


def pick_device(d: Dist, device: str = "auto") -> torch.device:
    """`auto`: this rank's CUDA device where there is one, else the CPU."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", d.local_rank)
    return torch.device("cpu")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA (`precision: auto` or `bf16`); plain fp32 elsewhere."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"precision {precision!r}: use auto, bf16 or fp32")
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if precision == "bf16" and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_model(
    model: torch.nn.Module,
    d: Dist,
    device: torch.device,
    gradient_checkpointing: bool,
    strategy: str = "ddp",
) -> torch.nn.Module:
    """Move to the device, enable checkpointing, and wrap for DDP or FSDP2 under torchrun."""
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    model.to(device)
    model.train()
    if not d.enabled:
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # Shard each decoder layer, then the root: the usual FSDP2 recipe for HF decoders.
        layers = getattr(getattr(model, "model", model), "layers", [])
        for layer in layers:
            fully_shard(layer)
        fully_shard(model)
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    raise ConfigError(f"strategy {strategy!r}: use ddp or fsdp")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def make_optimizer(model: torch.nn.Module, cfg: CoreConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norms (1-D parameters)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to `min_lr_ratio` at `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: CoreConfig, total_steps: int, offset: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup and cosine over `total_steps`; this scheduler's step 0 is the schedule's step
    `offset` (a DAgger iteration inside one schedule over the whole run)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(offset + s, cfg.warmup_steps, total_steps, cfg.min_lr_ratio),
    )


@dataclass
class RunState:
    """Where a run stands: saved in every checkpoint's `state.json`."""

    step: int = 0
    """Optimizer steps taken in the current training phase."""
    batch: int = 0
    """Micro-batches consumed from the current phase's batch stream (the data position)."""
    global_step: int = 0
    """Optimizer steps since the run began (across DAgger iterations); metrics use it."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Algorithm state (DAgger: its `Position`; Skill-SD: the skill buffer)."""


def read_run_state(ckpt: Path) -> RunState:
    """The `RunState` saved in checkpoint `ckpt` (its `state.json`)."""
    return RunState(**json.loads((ckpt / "state.json").read_text()))


class Metrics:
    """Appends metric records to `metrics.jsonl` (main rank only) and keeps them for plots."""

    def __init__(self, path: Path, enabled: bool = True, trackers: Trackers | None = None):
        self.path = path
        self.enabled = enabled
        self.trackers = trackers if enabled and trackers is not None else Trackers([])
        self.records: list[dict[str, Any]] = []
        if path.exists():
            self.records = [
                json.loads(line) for line in path.read_text().splitlines() if line.strip()
            ]

    def truncate(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        """Forget records a resumed run will redo (those after the checkpoint it resumes from)."""
        self.records = [r for r in self.records if keep(r)]
        if self.enabled:
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def log(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            self.trackers.log(record)

    def plot(self, path: Path) -> None:
        """Loss and learning rate per step, and evaluation success per iteration if any."""
        if not self.enabled:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = [r for r in self.records if r.get("kind") == "train"]
        evals = [r for r in self.records if r.get("kind") == "eval" and "success_rate" in r]
        n = 3 if evals else 2
        fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.5))
        if train:
            losses = [r["loss"] for r in train]
            axes[0].plot([r["step"] for r in train], losses)
            # Cross-entropy is positive (log scale); policy-gradient losses can be zero or negative.
            scale = "log" if min(losses) > 0 else "symlog"
            axes[0].set(xlabel="step", ylabel="loss", yscale=scale, title="training loss")
            axes[1].plot([r["step"] for r in train], [r["lr"] for r in train])
            axes[1].set(xlabel="step", ylabel="lr", title="learning rate")
        if evals:
            axes[2].plot(
                [r["iteration"] for r in evals], [r["success_rate"] for r in evals], marker="o"
            )
            axes[2].set(
                xlabel="iteration",
                ylabel="success",
                ylim=(0, 1),
                title="held-out success (student)",
            )
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def batch_loss(
    model: torch.nn.Module,
    examples: list[Example],
    pad_id: int,
    device: torch.device,
    precision: str,
) -> tuple[torch.Tensor, int]:
    """Weighted mean cross-entropy over the target tokens of one micro-batch, and their count."""
    b = collate(examples, pad_id)
    with autocast(device, precision):
        out = model(
            input_ids=b["input_ids_BT"].to(device),
            attention_mask=b["attention_mask_BT"].to(device),
            use_cache=False,
        )
    mask_BT = (b["mask_BT"] * b["weight_B"][:, None]).to(device)
    loss = masked_cross_entropy(out.logits, b["labels_BT"].to(device), mask_BT)
    return loss, int(b["mask_BT"].sum().item())


def train_steps(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: Iterator[list[Example]],
    *,
    n_steps: int,
    state: RunState,
    cfg: SupervisedConfig,
    pad_id: int,
    device: torch.device,
    d: Dist,
    metrics: Metrics,
    checkpoint: Callable[[RunState], None],
    extra_metrics: dict[str, Any] | None = None,
    desc: str = "train",
) -> RunState:
    """Run optimizer steps until `state.step == n_steps`; `batches` starts at `state.batch`.

    Each step accumulates `cfg.grad_accum` micro-batches, clips the gradient norm to
    `cfg.grad_clip`, steps AdamW and the schedule, logs a `kind: train` record and,
    every `cfg.save_every` steps, calls `checkpoint(state)`.
    """
    bar = Progress(n_steps, state.step, desc, enabled=cfg.progress and d.is_main)
    while state.step < n_steps:
        optimizer.zero_grad(set_to_none=True)
        total, tokens = 0.0, 0
        for micro in range(cfg.grad_accum):
            examples = next(batches)
            state.batch += 1
            sync = micro == cfg.grad_accum - 1 or not hasattr(model, "no_sync")
            ctx = contextlib.nullcontext() if sync else model.no_sync()
            with ctx:
                loss, n_tok = batch_loss(model, examples, pad_id, device, cfg.precision)
                (loss / cfg.grad_accum).backward()
            total += loss.item() / cfg.grad_accum
            tokens += n_tok
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        state.step += 1
        state.global_step += 1
        if d.enabled:
            # NCCL reduces device tensors only; gloo takes the CPU device here too.
            t = torch.tensor([total, float(tokens)], dtype=torch.float64, device=device)
            dist.all_reduce(t)
            total, tokens = t[0].item() / d.world_size, int(t[1].item())
        rec = {
            "kind": "train",
            "step": state.global_step,
            "loss": total,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "tokens": tokens,
            **(extra_metrics or {}),
        }
        metrics.log(rec)
        bar.update(1, loss=total)
        if cfg.save_every and state.step % cfg.save_every == 0 and state.step < n_steps:
            checkpoint(state)
    bar.close()
    return state


@dataclass
class Phase:
    """One run of supervised steps on a fixed set of examples (SFT's whole run, or one DAgger
    iteration's training)."""

    n_steps: int
    data_seed: int
    """Seeds the shuffled example order of this phase."""
    resume_from: Path | None = None
    """A step checkpoint of this phase to continue from (weights, AdamW, schedule, position)."""
    state: RunState = field(default_factory=RunState)
    desc: str = "train"
    extra_metrics: dict[str, Any] = field(default_factory=dict)
    optimizer: torch.optim.Optimizer | None = None
    """An AdamW carried over from an earlier phase (None: a fresh one)."""
    lr_span: tuple[int, int] | None = None
    """(offset, total): this phase's steps sit at `offset` of one schedule `total` steps
    long (None: a schedule of its own over `n_steps`)."""


def run_phase(
    student: Student, cfg: SupervisedConfig, run_dir: Path, examples: list[Example], phase: Phase
) -> tuple[RunState, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """`phase.n_steps` cross-entropy steps on `examples`, a checkpoint every `save_every`
    steps and at the end. Returns the state, the optimizer and the scheduler."""
    d = student.dist
    if cfg.batch_size % d.world_size:
        raise ConfigError(
            f"batch_size {cfg.batch_size} must divide by the {d.world_size} processes"
        )
    optimizer = (
        phase.optimizer if phase.optimizer is not None else make_optimizer(student.model, cfg)
    )
    offset, total = phase.lr_span or (0, phase.n_steps)
    scheduler = make_scheduler(optimizer, cfg, total, offset)
    state = phase.state
    if phase.resume_from is not None:
        state = load_checkpoint(phase.resume_from, student.model, optimizer, scheduler, d)
    batches = iterate_batches(
        examples,
        cfg.batch_size,
        seed=phase.data_seed,
        start_batch=state.batch,
        rank=d.rank,
        world_size=d.world_size,
    )

    def checkpoint(st: RunState) -> None:
        save_checkpoint(run_dir, student.model, student.tok, optimizer, scheduler, st, d)

    state = train_steps(
        student.model,
        optimizer,
        scheduler,
        batches,
        n_steps=phase.n_steps,
        state=state,
        cfg=cfg,
        pad_id=student.tok.pad_token_id,
        device=student.device,
        d=d,
        metrics=student.metrics,
        checkpoint=checkpoint,
        extra_metrics=phase.extra_metrics,
        desc=phase.desc,
    )
    checkpoint(state)
    return state, optimizer, scheduler


# --- checkpoints ------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(s: dict[str, Any]) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole model's weights on the CPU (gathered from all ranks under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    inner = unwrap(model)
    if dist.is_initialized():
        return get_model_state_dict(
            inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
    return None


def save_model(
    model: torch.nn.Module, tokenizer: Any, path: Path, d: Dist, card: PolicyCard | None = None
) -> None:
    """The model and tokenizer in Hugging Face format (safetensors), loadable with `hf:PATH`;
    `card` records the context window and sampling settings the student acted with."""
    from mentorgym.training import lora

    if lora.is_lora(model):  # the adapter only (peft's format); replicated on every rank
        if d.is_main:
            lora.save_adapter(model, path)
            if tokenizer is not None:
                tokenizer.save_pretrained(path)
        return
    sd = full_state_dict(model)
    if d.is_main:
        path.mkdir(parents=True, exist_ok=True)
        inner = unwrap(model)
        inner.save_pretrained(path, state_dict=sd, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
        if card is not None:
            write_policy_card(path, card)


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: RunState,
    d: Dist,
    keep: int = 2,
) -> Path:
    """Write `RUN/checkpoints/step_<global_step>/` atomically and point `latest` at it."""
    root = run_dir / "checkpoints"
    final = root / f"step_{state.global_step:07d}"
    tmp = root / f".tmp_step_{state.global_step:07d}"
    if d.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if d.enabled:
        dist.barrier()
    save_model(model, tokenizer, tmp / "model", d)
    fsdp = d.enabled and not hasattr(model, "no_sync")
    if fsdp or d.is_main:
        # FSDP optimizer states are sharded: each rank keeps its own shard.
        name = f"optimizer_rank{d.rank}.pt" if fsdp else "optimizer.pt"
        torch.save(optimizer.state_dict(), tmp / name)
    torch.save(rng_state(), tmp / f"rng_rank{d.rank}.pt")
    if d.is_main:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1))
    if d.enabled:
        dist.barrier()
    if d.is_main:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        (root / "latest.tmp").write_text(final.name)
        os.replace(root / "latest.tmp", root / "latest")
        olds = sorted(p for p in root.glob("step_*") if p != final)
        for p in olds[: max(len(olds) - (keep - 1), 0)]:
            shutil.rmtree(p, ignore_errors=True)
    if d.enabled:
        dist.barrier()
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint `RUN/checkpoints/latest` names, or None when the run has none yet."""
    ptr = run_dir / "checkpoints" / "latest"
    if not ptr.exists():
        return None
    path = run_dir / "checkpoints" / ptr.read_text().strip()
    return path if path.is_dir() else None


def load_checkpoint(
    ckpt: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    d: Dist,
) -> RunState:
    """Restore weights, optimizer, schedule and RNG from `ckpt` into the prepared objects."""
    load_weights(ckpt / "model", model)
    fsdp = d.enabled and not hasattr(model, "no_sync")
    opt_file = ckpt / (f"optimizer_rank{d.rank}.pt" if fsdp else "optimizer.pt")
    optimizer.load_state_dict(torch.load(opt_file, map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=False))
    rng_file = ckpt / f"rng_rank{d.rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return read_run_state(ckpt)


def load_weights(model_dir: Path, model: torch.nn.Module) -> None:
    """Load safetensors weights saved by `save_model` into a prepared (possibly wrapped) model."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    from mentorgym.training import lora

    if lora.load_adapter(model_dir, model):
        return
    ckpt = model_dir
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ConfigError(
            f"checkpoint {ckpt} has no model weights; resume from a complete checkpoint"
        )
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(f))
    inner = unwrap(model)
    if dist.is_initialized():
        set_model_state_dict(
            inner, sd, options=StateDictOptions(full_state_dict=True, strict=False)
        )
    else:
        missing, unexpected = inner.load_state_dict(sd, strict=False)
        # Tied embeddings are saved once; anything else missing means the wrong checkpoint.
        missing = [k for k in missing if "lm_head" not in k]
        if missing or unexpected:
            raise ConfigError(
                f"checkpoint {ckpt} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
