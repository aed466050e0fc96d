"""The optimizer and the supervised step: what every loop calls by name.

- `make_optimizer` / `make_scheduler`: AdamW; linear warmup then cosine decay to
  `min_lr_ratio * lr`.
- `optimizer_step`: clip the gradient norm, step AdamW and the schedule (every algorithm).
- `cross_entropy_step`: the forward and backward of one supervised step over `grad_accum`
  micro-batches (SFT and DAgger); under torchrun every rank reads the same global batch and
  takes its share, so the result does not depend on how many processes split it (up to
  float summation order).
- `Phase` / `open_phase`: a supervised loop's optimizer, schedule, state and batches,
  restored from a step checkpoint on resume.

Devices and torchrun live in `distributed.py`, checkpoints in `checkpoint.py`, the metrics
log in `metrics.py`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from mentorgym.errors import ConfigError
from mentorgym.training.checkpoint import (
    RunState,
    load_checkpoint,
)
from mentorgym.training.config import CoreConfig, SupervisedConfig
from mentorgym.training.data import Example, collate, iterate_batches
from mentorgym.training.distributed import (
    Dist,
    autocast,
)
from mentorgym.training.losses import masked_cross_entropy
from mentorgym.training.progress import Progress

if TYPE_CHECKING:
    from mentorgym.training.student import Student


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


def cross_entropy_step(
    model: torch.nn.Module,
    batches: Iterator[list[Example]],
    state: RunState,
    cfg: SupervisedConfig,
    pad_id: int,
    device: torch.device,
) -> tuple[float, int]:
    """Forward and backward over `cfg.grad_accum` micro-batches (the gradients of one optimizer
    step, each scaled by 1/grad_accum); returns this rank's mean loss and its target tokens.
    Advances `state.batch`, the data position."""
    total, tokens = 0.0, 0
    for micro in range(cfg.grad_accum):
        examples = next(batches)
        state.batch += 1
        # DDP all-reduces gradients on the last micro-batch only.
        sync = micro == cfg.grad_accum - 1 or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if sync else model.no_sync():
            loss, n_tok = batch_loss(model, examples, pad_id, device, cfg.precision)
            (loss / cfg.grad_accum).backward()
        total += loss.item() / cfg.grad_accum
        tokens += n_tok
    return total, tokens


def optimizer_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    grad_clip: float,
) -> tuple[float, float]:
    """Clip the gradient norm, step AdamW and the schedule; returns (grad norm, the lr used)."""
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    lr = scheduler.get_last_lr()[0]
    scheduler.step()
    return float(grad_norm), lr


def mean_over_ranks(loss: float, tokens: int, d: Dist, device: torch.device) -> tuple[float, int]:
    """The step's loss averaged and its tokens summed over the torchrun ranks."""
    if not d.enabled:
        return loss, tokens
    # NCCL reduces device tensors only; gloo takes the CPU device here too.
    t = torch.tensor([loss, float(tokens)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t[0].item() / d.world_size, int(t[1].item())


def checkpoint_due(step: int, save_every: int, last: int) -> bool:
    """Whether a step checkpoint is due after `step` (the loop's last one is written anyway)."""
    return bool(save_every) and step % save_every == 0 and step < last


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


@dataclass
class OpenPhase:
    """What a supervised loop steps: the optimizer, its schedule, the state and the batches."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    state: RunState
    batches: Iterator[list[Example]]


def open_phase(
    student: Student, cfg: SupervisedConfig, examples: list[Example], phase: Phase
) -> OpenPhase:
    """AdamW (or the carried one), the schedule, the state restored from `phase.resume_from`,
    and the example stream from the restored data position (this rank's share)."""
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
    return OpenPhase(optimizer, scheduler, state, batches)


def train_record(
    state: RunState, loss: float, lr: float, grad_norm: float, tokens: int, **extra: Any
) -> dict[str, Any]:
    """The `kind: train` metrics record of one supervised step."""
    return {
        "kind": "train",
        "step": state.global_step,
        "loss": loss,
        "lr": lr,
        "grad_norm": grad_norm,
        "tokens": tokens,
        **extra,
    }


def progress_bar(
    student: Student, cfg: SupervisedConfig, phase: Phase, state: RunState
) -> Progress:
    return Progress(
        phase.n_steps, state.step, phase.desc, enabled=cfg.progress and student.dist.is_main
    )
