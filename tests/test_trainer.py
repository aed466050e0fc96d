"""Config loading, the loss going down, and exact resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mentorgym.errors import ConfigError
from mentorgym.training import dagger, sft
from mentorgym.training.config import load_config, parse_sets
from mentorgym.training.trainer import lr_factor

ROOT = Path(__file__).resolve().parents[1]


def test_config_yaml_overrides_and_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("algorithm: dagger\niterations: 3\nenv_kwargs: {num_boxes: 1}\n")
    algo, cfg = load_config(p, ["lr=2e-4", "dedupe=true", "trajectories=none"[:0] or "window=2"])
    assert algo == "dagger" and isinstance(cfg, dagger.Config)
    assert cfg.iterations == 3 and cfg.lr == 2e-4 and cfg.dedupe is True and cfg.window == 2
    assert cfg.env_kwargs == {"num_boxes": 1}
    with pytest.raises(
        ConfigError, match="unknown config key 'itrations'.*valid keys:.*iterations"
    ):
        load_config(p, ["itrations=2"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(p, ["iterations=many"])
    with pytest.raises(ConfigError, match="beta_schedule"):
        load_config(p, ["beta_schedule=sawtooth"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_sets(["lr"])
    q = tmp_path / "s.yaml"
    q.write_text("algorithm: sft\ntrajectories: null\n")
    _, c2 = load_config(q, ["trajectories=x.jsonl"])
    assert isinstance(c2, sft.Config) and c2.trajectories == "x.jsonl"
    (tmp_path / "n.yaml").write_text("lr: 1\n")
    with pytest.raises(ConfigError, match="algorithm"):
        load_config(tmp_path / "n.yaml")


def test_beta_schedules_and_lr_schedule():
    for name in ("linear", "cosine", "exponential", "step"):
        cfg = dagger.Config(beta_schedule=name, beta_decay_iters=4)
        betas = [dagger.beta_at(cfg, i) for i in range(6)]
        assert betas[0] == 1.0 and betas[4] == 0.0 and betas[5] == 0.0
        assert all(a >= b for a, b in zip(betas, betas[1:]))
    assert dagger.beta_at(dagger.Config(beta_decay_iters=4), 2) == 0.5
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(10, 10, 100, 0.1) == pytest.approx(1.0)


def _write_expert_data(path: Path, n: int) -> None:
    from mentorgym.agents.rollout import run
    from mentorgym.agents.specs import load_policy

    run("mentorgym/Sokoban-v0", load_policy("expert"), n, seed=0, out=path)


def _sft_cmd(run_dir: Path, data: Path, student: str, resume: bool) -> list[str]:
    sets = [
        f"trajectories={data}",
        f"student={student}",
        "steps=8",
        "save_every=2",
        "batch_size=8",
        "eval_episodes=0",
        "progress=false",
        "context_turns=1",
        "system_prompt=false",
        "lr=3e-3",
    ]
    code = (
        "import sys, torch; torch.set_num_threads(1);"
        "from mentorgym.training.entry import train_from_config as t;"
        f"t({None if resume else repr(str(ROOT / 'configs/sokoban_bc.yaml'))}, {sets!r}, "
        f"{None if resume else repr(str(run_dir))}, {repr(str(run_dir)) if resume else None}, False)"
    )
    return [sys.executable, "-c", code]


def _losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines if json.loads(x).get("kind") == "train"]


@pytest.mark.slow
def test_loss_goes_down_and_sigkill_resume_is_exact(tmp_path):
    from mentorgym.agents.tiny import default_tiny_path

    data = tmp_path / "expert.jsonl"
    _write_expert_data(data, 12)
    student = str(default_tiny_path())
    a = tmp_path / "a"
    subprocess.run(_sft_cmd(a, data, student, False), check=True, capture_output=True, cwd=tmp_path)
    ref = _losses(a)
    assert len(ref) == 8 and ref[-1] < ref[0]
    assert (a / "final" / "model.safetensors").exists() and (a / "config.yaml").exists()

    b = tmp_path / "b"
    proc = subprocess.Popen(
        _sft_cmd(b, data, student, False),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        ptr = b / "checkpoints" / "latest"
        if ptr.exists() and ptr.read_text().strip() >= "step_0000004":
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(_sft_cmd(b, data, student, True), check=True, capture_output=True, cwd=tmp_path)
    assert _losses(b) == pytest.approx(ref, abs=1e-6)
