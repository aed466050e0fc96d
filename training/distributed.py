"""Where the trainer runs: torchrun ranks, the device, autocast, seeds, DDP/FSDP2 wrapping.

- Device: CUDA with bf16 autocast where present, else CPU in fp32.
- Multi-process (one machine, `torchrun --nproc_per_node N`): DDP, or FSDP2
  (`torch.distributed.fsdp.fully_shard`) for models that do not fit one device.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from mentorgym.errors import ConfigError


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


def set_deterministic(on: bool) -> None:
    """`deterministic: true`: torch's deterministic algorithms (cuBLAS needs its workspace
    setting before the first matmul, so it is set here too)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)


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
