"""Two-step smoke runs of the sft and dagger entry points on the tiny model; the SWE dry run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mentorgym.training.entry import train_from_config

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "progress=false",
    "steps_per_iteration=2",
    "batch_size=8",
    "episodes=4",
    "eval_episodes=3",
    "max_new_tokens=8",
    "save_every=1",
]


@pytest.mark.slow
def test_dagger_smoke_and_resume(tmp_path, capsys):
    from mentorgym.agents.tiny import default_tiny_path

    run = train_from_config(
        str(ROOT / "configs/sokoban_dagger.yaml"),
        [*SMALL, "iterations=2", f"student={default_tiny_path()}"],
        str(tmp_path / "r"),
        None,
        False,
    )
    out = capsys.readouterr().out
    assert "heldout" in out and "final student" in out
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["iteration"] for r in evals] == [0, 1] and [r["beta"] for r in evals] == [
        1.0,
        pytest.approx(2 / 3),
    ]
    assert (
        evals[1]["labels_total"] > evals[0]["labels_total"]
        and evals[1]["aggregate"] == evals[1]["labels_total"]
    )
    assert (run / "iter_01" / "rollouts.jsonl").exists() and (
        run / "final" / "config.json"
    ).exists()
    trajs = [json.loads(x) for x in (run / "iter_00" / "rollouts.jsonl").read_text().splitlines()]
    assert all(t["seed"] < 1_000_000 for t in trajs)
    assert all(turn["teacher_action"] for t in trajs for turn in t["turns"])
    # Resuming a finished run redoes nothing and keeps the record.
    train_from_config(None, [], None, str(run), False)
    again = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in again if r["kind"] == "eval"] == evals


@pytest.mark.slow
def test_dagger_one_schedule_over_the_run_survives_a_crash_between_iterations(
    tmp_path, monkeypatch
):
    """`lr_schedule: run`: one warmup and one cosine over all iterations, the AdamW carried
    across them, and a run that dies between iterations resumes on the same schedule."""
    import torch

    from mentorgym.agents.tiny import default_tiny_path
    from mentorgym.training import dagger
    from mentorgym.training.trainer import lr_factor

    real_collect = dagger.collect
    crashed = []

    def collect_then_die(s, cfg, run_dir, i):
        if i == 1 and not crashed:
            crashed.append(i)
            raise RuntimeError("killed between iterations")
        return real_collect(s, cfg, run_dir, i)

    monkeypatch.setattr(dagger, "collect", collect_then_die)
    sets = [
        *SMALL,
        "iterations=2",
        "steps_per_iteration=3",
        "warmup_steps=2",
        "lr_schedule=run",
        "eval_episodes=0",
        f"student={default_tiny_path()}",
    ]
    with pytest.raises(RuntimeError, match="killed between iterations"):
        train_from_config(
            str(ROOT / "configs/sokoban_dagger.yaml"), sets, str(tmp_path / "r"), None, False
        )
    run = tmp_path / "r"
    boundary = sorted((run / "checkpoints").iterdir())[-1]
    adam = torch.load(boundary / "optimizer.pt", weights_only=False)
    assert adam["state"], "the boundary checkpoint must hold the AdamW moments, not a fresh one"
    train_from_config(None, [], None, str(run), False)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["kind"] == "train"]
    peak = 3.0e-3  # configs/sokoban_dagger.yaml
    assert lrs == pytest.approx([peak * lr_factor(k, 2, 6, 0.1) for k in range(6)])
    assert lrs[3] < lrs[2], "the second iteration continues the decay instead of warming up again"


@pytest.mark.slow
def test_sft_smoke(tmp_path):
    from mentorgym.agents.tiny import default_tiny_path

    run = train_from_config(
        str(ROOT / "configs/sokoban_bc.yaml"),
        [
            "progress=false",
            "steps=2",
            "batch_size=8",
            "episodes=4",
            "eval_episodes=2",
            "max_new_tokens=8",
            f"student={default_tiny_path()}",
        ],
        str(tmp_path / "b"),
        None,
        False,
    )
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["train", "train", "eval"] and records[-1][
        "episodes"
    ] == 2
    assert (run / "final" / "model.safetensors").exists() and (run / "curves.png").exists()


def test_swe_gym_dry_run_validates_offline(capsys):
    train_from_config(str(ROOT / "configs/swe_gym_dagger.yaml"), [], None, None, True)
    out = capsys.readouterr().out
    assert "dry run OK" in out and "strategy: fsdp" in out and "Qwen/Qwen3-4B" in out
    assert "beta per iteration" in out


def test_all_configs_load():
    from mentorgym.training.config import load_config

    for name in ("sokoban_dagger", "sokoban_bc", "math_dagger", "swe_gym_dagger"):
        load_config(ROOT / "configs" / f"{name}.yaml")
