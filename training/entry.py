"""`mentorgym train CONFIG.yaml [--set key=value ...] [--out DIR] [--resume DIR] [--dry-run]`.

Loads the config (its `algorithm:` picks the module), echoes it, saves it as
`RUN/config.yaml`, and calls the algorithm's `train` (or `dry_run`), with Transformers'
per-checkpoint progress bars off; the run ends with a short summary (held-out success,
the checkpoint, how to view the run). A resumed run
reads `RUN/config.yaml` (overrides given with `--resume` still apply) so it continues
exactly the run it was.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from mentorgym.errors import ConfigError
from mentorgym.training.config import algorithm_module, dump_config, echo_config, load_config
from mentorgym.training.progress import quiet_transformers, run_summary


def default_run_dir(config_path: str) -> Path:
    return Path("runs") / f"{Path(config_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def train_from_config(
    path: str | None, sets: list[str], out: str | None, resume: str | None, dry_run: bool
) -> Path:
    """Run (or dry-run) the training a config describes; returns the run dir."""
    if resume is not None:
        run_dir = Path(resume)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise ConfigError(
                f"--resume {resume}: no config.yaml there; point it at a run dir made by `mentorgym train`"
            )
        algo, cfg = load_config(saved, sets)
    else:
        if path is None:
            raise ConfigError(
                "give a config file (e.g. configs/sokoban_dagger.yaml) or --resume RUN"
            )
        algo, cfg = load_config(path, sets)
        run_dir = Path(out) if out else default_run_dir(path)
    module = algorithm_module(algo)
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        print(echo_config(cfg, algo), end="")
    if dry_run:
        for line in module.dry_run(cfg):
            print(line)
        print(
            f"dry run OK: {algo} config is valid; nothing was trained (run dir would be {run_dir})"
        )
        return run_dir
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, run_dir / "config.yaml", algo)
        print(f"run dir: {run_dir}")
    with quiet_transformers():
        module.train(cfg, run_dir, resume=resume is not None)
    if main:
        print("\n".join(run_summary(run_dir)), flush=True)
    return run_dir
