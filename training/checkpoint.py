"""Checkpoints: `RUN/checkpoints/step_XXXXXXX/`, written atomically, and exact resume.

A checkpoint holds the model and tokenizer (`save_pretrained`, safetensors), the optimizer,
the scheduler, the RNG states (python, numpy, torch) per rank and the data position in
`state.json` (`RunState`). It is written to a temporary folder and renamed, so a kill
mid-save leaves the previous checkpoint intact; `latest` names the newest one. Resume is
exact on CPU with a fixed seed. `save_model` writes the model alone, loadable as `hf:PATH`
(`RUN/final`, with its policy card).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from mentorgym.agents.card import PolicyCard, write_policy_card
from mentorgym.errors import ConfigError
from mentorgym.training.distributed import Dist, unwrap


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
