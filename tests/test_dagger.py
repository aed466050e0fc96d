"""Two-step smoke runs of the sft and dagger entry points on the tiny model; the SWE dry run;
every shipped config; a teacher with another tokenizer; DAgger's student-only labels."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import pytest
import torch

from mentorgym.training.entry import train_from_config

ROOT = Path(__file__).resolve().parents[1]
SIX_TURN_SOKOBAN = "mentorgym-test/SokobanSixTurns-v0"
if SIX_TURN_SOKOBAN not in gymnasium.registry:
    gymnasium.register(
        id=SIX_TURN_SOKOBAN,
        entry_point="mentorgym.envs.sokoban:SokobanEnv",
        max_episode_steps=6,
        kwargs={"dim_room": (6, 6), "num_boxes": 1},
    )
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
    assert records[1]["loss"] < records[0]["loss"] and records[0]["grad_norm"] > 0
    assert (run / "final" / "model.safetensors").exists() and (run / "curves.png").exists()
    from mentorgym.agents.hf import HFPolicy

    before = HFPolicy(str(default_tiny_path()), device="cpu").model.state_dict()
    after = HFPolicy(str(run / "final"), device="cpu").model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in after if k in before)


def test_swe_gym_dry_run_validates_offline(capsys):
    train_from_config(str(ROOT / "configs/swe_gym_dagger.yaml"), [], None, None, True)
    out = capsys.readouterr().out
    assert "dry run OK" in out and "strategy: fsdp" in out and "Qwen/Qwen3-4B" in out
    assert "beta per iteration" in out


def test_every_config_loads_and_sets_only_its_own_fields():
    """Every file in configs/ loads (by glob) and validates; each algorithm's Config keeps the
    core fields and adds its own, each declared once."""
    import dataclasses

    from mentorgym.training.config import CoreConfig, OnPolicyConfig, SupervisedConfig, load_config

    paths = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(paths) >= 15
    core = {f.name for f in dataclasses.fields(CoreConfig)}
    for path in paths:
        algo, cfg = load_config(path)
        fields = {f.name for f in dataclasses.fields(cfg)}
        assert core <= fields, path
        family = OnPolicyConfig if isinstance(cfg, OnPolicyConfig) else SupervisedConfig
        assert isinstance(cfg, family) and path.stem.endswith(algo.replace("sft", "bc")), path
    # the family fields are not mixed: no on-policy knob on a supervised config, and back
    on_policy_only = {f.name for f in dataclasses.fields(OnPolicyConfig)} - core
    supervised_only = {f.name for f in dataclasses.fields(SupervisedConfig)} - core
    assert on_policy_only and supervised_only and not on_policy_only & supervised_only


@pytest.mark.slow
def test_teacher_with_another_tokenizer_is_reencoded(tmp_path):
    """A teacher whose tokenizer differs: its sampled ids are not the student's, so DAgger and BC
    re-encode its text with the student's tokenizer (the ids would otherwise be garbage)."""
    from transformers import AutoTokenizer

    from mentorgym.agents import chat
    from mentorgym.agents.hf import HFPolicy
    from mentorgym.agents.rollout import run
    from mentorgym.agents.tiny import build_tiny, default_tiny_path
    from mentorgym.training.data import examples_from_trajectories
    from mentorgym.training.student import teacher_shares_tokenizer

    other = build_tiny(tmp_path / "other", env_ids=["mentorgym/MathTools-v0"], seed=3)
    tok = AutoTokenizer.from_pretrained(default_tiny_path())
    assert AutoTokenizer.from_pretrained(other).get_vocab() != tok.get_vocab()
    assert not teacher_shares_tokenizer(f"hf:{other}", tok)
    assert teacher_shares_tokenizer(f"hf:{default_tiny_path()}", tok)
    teacher = HFPolicy(str(other), max_new_tokens=6, device="cpu", seed=0)
    trajs = run(SIX_TURN_SOKOBAN, teacher, 2, seed=0)
    assert all(t.token_ids for traj in trajs for t in traj.turns)
    exs, stats = examples_from_trajectories(
        trajs,
        tok,
        max_seq_len=4096,
        target="action",  # every turn is the teacher's own (no mixture here)
        foreign_ids=teacher_shares_tokenizer(f"hf:{other}", tok),
    )
    assert stats.exact_ids == 0 and len(exs) == sum(len(t.turns) for t in trajs)
    turns = [t for traj in trajs for t in traj.turns]
    for ex, turn in zip(exs, turns, strict=True):
        assert ex.input_ids[ex.n_prompt :] == chat.target_ids(tok, text=turn.action)


def test_student_labels_only_keeps_the_history_on_a_multi_turn_env(tmp_path):
    """`student_labels_only`: after iteration 0 only the student's states are labeled, but each
    keeps the context the student acted from, teacher turns included (no spliced history)."""
    from transformers import AutoTokenizer

    from mentorgym.agents.rollout import run
    from mentorgym.agents.specs import load_policy
    from mentorgym.agents.tiny import default_tiny_path
    from mentorgym.training import dagger

    tok = AutoTokenizer.from_pretrained(default_tiny_path())
    for i in range(2):
        run(
            SIX_TURN_SOKOBAN,
            load_policy("random"),
            4,
            seed=10 * i,
            teacher=load_policy("expert"),
            beta=0.5,
            relabel=True,
            out=dagger.iter_dir(tmp_path, i) / "rollouts.jsonl",
            mixture_seed=i,
        )
    cfg = dagger.Config(context_turns=0, max_seq_len=4096)
    every, _, _ = dagger.aggregate(cfg, tmp_path, 1, tok, foreign_ids=True)
    cfg.student_labels_only = True
    only, _, _ = dagger.aggregate(cfg, tmp_path, 1, tok, foreign_ids=True)
    from mentorgym.agents.trajectory import read_trajectories

    trajs = list(read_trajectories(dagger.iter_dir(tmp_path, 1) / "rollouts.jsonl"))
    mixed = [t for t in trajs if {turn.actor for turn in t.turns} == {"student", "teacher"}]
    assert mixed, "the mixture should give episodes with turns by both"
    by_key = {(e.meta["iteration"], e.meta["seed"], e.meta["turn"]): e for e in every}
    labeled = [e for e in only if e.meta["iteration"] == 1]
    assert labeled and len(labeled) < len([e for e in every if e.meta["iteration"] == 1])
    for e in labeled:
        traj = next(t for t in trajs if t.seed == e.meta["seed"])
        assert traj.turns[e.meta["turn"]].actor == "student"
        # the same example as with all labels: same context, teacher turns included
        assert e.input_ids == by_key[(1, e.meta["seed"], e.meta["turn"])].input_ids


@pytest.mark.slow
def test_sampler_gap_scores_the_history_as_sampled_not_as_retokenized(tmp_path):
    """Multi-turn math with the whole history in view: an earlier turn sampled at temperature
    1 is often a token split its text does not tokenize back to. DAgger's logged sampler gap
    must score each turn after the ids that were sampled (as training does), so with the
    `hf` sampler, the same weights on both sides, it is ~0 (row rounding only); scoring a
    re-tokenized history instead reported gaps of 0.02 mean, 5 max on SmolLM2."""
    from mentorgym.agents.tiny import default_tiny_path

    run = train_from_config(
        str(ROOT / "configs/math_dagger.yaml"),
        [
            *SMALL,
            "iterations=2",
            "beta_decay_iters=1",  # iteration 1: the student drives every turn
            "episodes=6",
            "max_new_tokens=24",
            "eval_episodes=0",
            f"student={default_tiny_path()}",
        ],
        str(tmp_path / "r"),
        None,
        False,
    )
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    gaps = [r for r in records if r["kind"] == "sampler_gap"]
    rollouts = (run / "iter_01" / "rollouts.jsonl").read_text().splitlines()
    multi_turn = [json.loads(x) for x in rollouts if len(json.loads(x)["turns"]) > 1]
    assert multi_turn, "the test needs episodes of more than one turn"
    assert gaps and gaps[-1]["sampler_logprob_gap_max"] < 1e-4
