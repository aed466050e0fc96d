"""Two CPU processes over gloo under torchrun: a short SFT whose ranks agree and whose loss falls."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_process_sft(tmp_path):
    from mentorgym.agents.rollout import run
    from mentorgym.agents.specs import load_policy
    from mentorgym.agents.tiny import default_tiny_path

    data = tmp_path / "expert.jsonl"
    run("mentorgym/Sokoban-v0", load_policy("expert"), 12, seed=0, out=data)
    sets = [
        f"trajectories={data}",
        f"student={default_tiny_path()}",
        "steps=6",
        "save_every=3",
        "batch_size=8",
        "eval_episodes=0",
        "progress=false",
        "context_turns=1",
        "system_prompt=false",
        "device=cpu",
    ]
    code = (
        "import torch, torch.distributed as dist; torch.set_num_threads(1);"
        "from mentorgym.training.entry import train_from_config as t;"
        f"t({str(ROOT / 'configs/sokoban_bc.yaml')!r}, {sets!r}, {str(tmp_path / 'r')!r}, None, False);"
        "from mentorgym.training.distributed import unwrap;"
        "dist.destroy_process_group() if dist.is_initialized() else None"
    )
    script = tmp_path / "job.py"
    script.write_text(code)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29531",
            str(script),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x2 (ddp)" in proc.stdout
    run_dir = tmp_path / "r"
    losses = [
        json.loads(x)["loss"]
        for x in (run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["kind"] == "train"
    ]
    assert len(losses) == 6 and losses[-1] < losses[0]
    ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    # Both ranks saved their RNG state and agree on the weights that were saved once.
    assert (ckpt / "rng_rank0.pt").exists() and (ckpt / "rng_rank1.pt").exists()
    from transformers import AutoModelForCausalLM

    final = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    from safetensors.torch import load_file

    saved = load_file(ckpt / "model" / "model.safetensors")
    for name, p in final.state_dict().items():
        if name in saved:
            assert torch.equal(saved[name], p)
