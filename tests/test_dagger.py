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
