"""The headline job's SWE path end to end on a CPU: configs/swe_builtin_dagger.yaml (tiny
student, the env's expert as teacher, builtin tasks in Docker), killed after its first
iteration and resumed; the SWE-Gym recipe validated offline against hand-written rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mentorgym.training.entry import train_from_config

ROOT = Path(__file__).resolve().parents[1]
SWE_GYM_FILE = ROOT / "tests" / "data" / "swe_gym" / "instances.jsonl"


def _docker_skip_reason() -> str | None:
    try:
        from mentorgym.sandboxes.docker import engine_available
    except ImportError as e:
        return f"the Docker sandbox is not importable: {e}"
    return engine_available()


_REASON = _docker_skip_reason()


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_swe_builtin_dagger_runs_end_to_end_and_resumes(tmp_path, capsys, monkeypatch):
    from mentorgym.training import dagger

    real_collect = dagger.collect
    killed: list[int] = []

    def collect_then_die(s, cfg, run_dir, i):
        if i == 1 and not killed:
            killed.append(i)
            raise RuntimeError("killed after the first iteration")
        return real_collect(s, cfg, run_dir, i)

    monkeypatch.setattr(dagger, "collect", collect_then_die)
    sets = [
        "progress=false",
        "episodes=3",
        "eval_episodes=2",
        "steps_per_iteration=2",
        "save_every=1",
    ]  # the config's own student: a fresh tiny model with the tokenizer its max_seq_len fits
    config = str(ROOT / "configs" / "swe_builtin_dagger.yaml")
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="killed after the first iteration"):
        train_from_config(config, sets, str(run), None, False)
    assert (run / "iter_00" / "eval.jsonl").exists() and not (run / "iter_01").exists()
    train_from_config(None, [], None, str(run), False)
    out = capsys.readouterr().out

    # the run directory reads like the Sokoban one
    for name in ("config.yaml", "metrics.jsonl", "curves.png", "final/config.json"):
        assert (run / name).exists(), name
    evals = [r for r in _lines(run / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["iteration"] for r in evals] == [0, 1]
    assert [r["beta"] for r in evals] == [1.0, 0.5]
    assert evals[1]["aggregate"] > evals[0]["aggregate"]

    # every visited state has the expert's label, also after the student's malformed calls
    trajs = _lines(run / "iter_01" / "rollouts.jsonl")
    turns = [turn for t in trajs for turn in t["turns"]]
    assert turns and all(turn["teacher_action"] for turn in turns)
    after_bad = [
        t["turns"][k + 1]
        for t in trajs
        for k in range(len(t["turns"]) - 1)
        if t["turns"][k]["actor"] == "student" and t["turns"][k]["info"].get("format_error")
    ]
    assert after_bad, "the untrained student should make a malformed call somewhere"
    assert all("git apply" in turn["teacher_action"] for turn in after_bad)

    # turns whose long SWE context passes max_seq_len are left out of the loss (training's
    # one truncation rule: contexts are never cut), and the run says how many
    assert "dropped (too long)" in out

    # the held-out evaluation graded each episode for real, in a fresh container
    held_out = _lines(run / "iter_01" / "eval.jsonl")
    assert held_out and all(t["seed"] >= 1_000_000 for t in held_out)
    for t in held_out:
        info = t["turns"][-1]["info"]
        assert info.get("tests"), info  # per-test statuses from the grading run
        assert "resolved" in info


def test_swe_gym_recipe_validates_offline_with_a_swe_gym_file(capsys):
    sets = [f'env_kwargs={{"tasks": "{SWE_GYM_FILE}"}}']
    train_from_config(str(ROOT / "configs" / "swe_gym_dagger.yaml"), sets, None, None, True)
    out = capsys.readouterr().out
    assert "env: constructed" in out and "dry run OK" in out
    from mentorgym.envs.swe.tasks import check_tasks

    lines, _ = check_tasks(str(SWE_GYM_FILE), images=False)
    assert "xingyaoww/sweb.eval.x86_64.getmoto_s_moto-7365:latest" in "\n".join(lines)
    text = (ROOT / "configs" / "swe_gym_dagger.yaml").read_text()
    assert "GPU" in text and "Docker" in text and "xingyaoww/" in text
