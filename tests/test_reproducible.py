"""Same seed, same run: sampled tokens depend on (run seed, episode, turn) only, so batching,
concurrency and arrival order change nothing that is sampled, and a training run repeats."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from mentorgym.agents.hf import HFPolicy
from mentorgym.agents.rollout import run
from mentorgym.agents.seeding import derive, request_seed, turn_seed
from mentorgym.agents.tiny import default_tiny_path
from mentorgym.agents.turn_futures import BatchingQueue
from mentorgym.envs.base import system, user
from mentorgym.training.entry import train_from_config

ROOT = Path(__file__).resolve().parents[1]
SOKOBAN = "mentorgym/Sokoban-v0"


@pytest.fixture(scope="module")
def policy() -> HFPolicy:
    return HFPolicy(str(default_tiny_path()), temperature=1.0, max_new_tokens=8, seed=7)


def _history(k: int) -> list:
    return [system("Play."), user(f"Room {k}: push the box.")]


def test_derived_seeds_are_stable_and_distinct() -> None:
    assert derive("a", 1) == derive("a", 1) < 2**63
    assert len({turn_seed("seed=0", t) for t in range(50)}) == 50
    assert turn_seed("seed=0", 1) != turn_seed("seed=1", 0)
    assert request_seed(0, turn_seed("seed=3", 2)) != request_seed(1, turn_seed("seed=3", 2))


def test_a_rows_sample_does_not_depend_on_its_batch(policy: HFPolicy) -> None:
    histories = [_history(k) for k in range(6)]
    seeds = [turn_seed(f"seed={k}", 0) for k in range(6)]
    together = policy.try_act_batch(histories, None, seeds)
    alone = [policy.try_act_batch([h], None, [s])[0] for h, s in zip(histories, seeds)]
    reversed_ = policy.try_act_batch(histories[::-1], None, seeds[::-1])[::-1]
    for a, b, c in zip(together, alone, reversed_, strict=True):
        assert a.token_ids == b.token_ids == c.token_ids  # type: ignore[union-attr]
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)  # type: ignore[union-attr]
    # equal prompts in one batch still sample apart: their turn seeds differ
    twins = policy.try_act_batch([histories[0]] * 4, None, [turn_seed("x", t) for t in range(4)])
    assert len({tuple(a.token_ids) for a in twins}) > 1  # type: ignore[union-attr]


def test_sampled_rollouts_repeat_under_any_batching_and_either_engine(policy, tmp_path) -> None:
    """The asynchronous engine at concurrency 1, 8 (with random delays in the batching
    window) and the lockstep engine sample the same episodes."""
    kw = {"seed": 0, "env_kwargs": {"max_episode_steps": 4}}
    runs = [
        run(SOKOBAN, policy, 8, concurrency=1, **kw),
        run(SOKOBAN, policy, 8, concurrency=8, max_in_flight=3, **kw),
        run(SOKOBAN, policy, 8, concurrency=8, engine="lockstep", **kw),
    ]
    rng = random.Random(0)
    orig = BatchingQueue.__init__

    def jittery(self, *a, **k):  # batches cut at random points
        orig(self, *a, **k)
        self.window_s = rng.uniform(0.0, 0.02)

    BatchingQueue.__init__ = jittery  # type: ignore[method-assign]
    try:
        runs.append(run(SOKOBAN, policy, 8, concurrency=5, **kw))
    finally:
        BatchingQueue.__init__ = orig  # type: ignore[method-assign]
    ids = [[[t.token_ids for t in traj.turns] for traj in r] for r in runs]
    assert all(x == ids[0] for x in ids[1:])
    assert len({tuple(map(tuple, ep)) for ep in ids[0]}) == 8  # the episodes differ
    # another run seed samples other tokens
    other = HFPolicy(str(default_tiny_path()), temperature=1.0, max_new_tokens=8, seed=8)
    assert [[t.token_ids for t in traj.turns] for traj in run(SOKOBAN, other, 8, **kw)] != ids[0]


@pytest.mark.slow
def test_openai_against_serve_model_repeats_at_any_concurrency(policy: HFPolicy) -> None:
    """`openai:` sends (run seed, episode, turn) as each request's `seed`; `serve-model`
    samples each seeded prompt from a generator of its own, whatever it is batched with."""
    from mentorgym.agents.openai_api import OpenAIPolicy
    from mentorgym.server import BackgroundServer, create_app

    kw = {"seed": 0, "env_kwargs": {"max_episode_steps": 3}}
    with BackgroundServer(create_app(policy, "tiny", batch_window_s=0.02)) as srv:
        ids = []
        for conc in (1, 6):
            remote = OpenAIPolicy(srv.url, "tiny", max_tokens=6, temperature=1.0, seed=4)
            trajs = run(SOKOBAN, remote, 6, concurrency=conc, **kw)
            ids.append([[t.token_ids for t in traj.turns] for traj in trajs])
            remote.close()
    assert ids[0] == ids[1] and len({str(x) for x in ids[0]}) > 1


@pytest.mark.parametrize("context_turns", [0, 1])
def test_the_kv_cache_kept_between_turns_changes_no_token(context_turns: int) -> None:
    """Full history (each prompt extends the last: the cache is reused) and a one-turn
    window (the prompt slides: only the common prefix is); greedy and sampled alike."""
    kw = {"seed": 0, "concurrency": 4, "env_kwargs": {"max_episode_steps": 4}}
    for temperature in (0.0, 1.0):
        got = []
        for kv in (False, True):
            p = HFPolicy(
                str(default_tiny_path()),
                temperature=temperature,
                max_new_tokens=6,
                context_turns=context_turns,
                seed=1,
                kv_cache=kv,
            )
            trajs = run(SOKOBAN, p, 4, **kw)
            got.append([[t.token_ids for t in traj.turns] for traj in trajs])
            assert not p._kv  # every episode's cache dropped when it ended
            if kv and context_turns == 0:
                assert p.kv_stats["reused_tokens"] > p.kv_stats["prompt_tokens"] / 2
        assert got[0] == got[1]


def test_the_kv_cache_stays_within_its_budget(policy: HFPolicy) -> None:
    p = HFPolicy(str(default_tiny_path()), max_new_tokens=4, seed=0, kv_cache_bytes=1)
    p.try_act_batch([_history(0), _history(1)], ["a", "b"], [1, 2])
    assert not p._kv  # each entry alone is over one byte
    p.kv_cache_bytes = 10**9
    p.try_act_batch([_history(0), _history(1)], ["a", "b"], [1, 2])
    assert list(p._kv) == ["a", "b"]
    p.kv_cache_bytes = p._kv["b"].nbytes  # room for one: the least recently used goes
    p.try_act_batch([_history(1)], ["b"], [3])
    assert list(p._kv) == ["b"]


# --- training runs -------------------------------------------------------------------------------

_WALL_TIME = ("_s", "per_s", "_time", "seconds")


def _metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without wall-time fields (the only thing allowed to differ)."""
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith(_WALL_TIME)} for r in records]


DAGGER_SMALL = [
    "progress=false",
    "iterations=2",
    "steps_per_iteration=3",
    "batch_size=8",
    "episodes=6",
    "eval_episodes=4",
    "max_new_tokens=8",
    "save_every=3",
    "env_kwargs={max_episode_steps: 8}",
]


@pytest.mark.slow
def test_the_main_job_repeats_at_any_concurrency(tmp_path) -> None:
    """A shortened `mentorgym train configs/sokoban_dagger.yaml` twice: one episode at a
    time, then 16 at once (batches of every size); metrics.jsonl is the same, digit for digit."""
    dirs = []
    for i, conc in enumerate([1, 16]):
        sets = [*DAGGER_SMALL, f"concurrency={conc}", "deterministic=true"]
        path = str(ROOT / "configs/sokoban_dagger.yaml")
        dirs.append(train_from_config(path, sets, str(tmp_path / f"r{i}"), None, False))
    a, b = (_metrics(d) for d in dirs)
    # Everything the run learns and scores is equal to the digit. The sampler gap is the one
    # float computed from the sampler's logprobs, whose rounding depends on the batch's shape
    # (~1e-7; see `_agree`): it is compared to far below its printed digits.
    gap = "sampler_logprob_gap"
    assert [{k: v for k, v in r.items() if not k.startswith(gap)} for r in a] == [
        {k: v for k, v in r.items() if not k.startswith(gap)} for r in b
    ]
    _agree(a, b)
    evals = [r for r in a if r["kind"] == "eval"]
    assert evals[1]["student_turn_frac"] > 0  # the student sampled turns in iteration 1


def _agree(a: list[dict], b: list[dict]) -> None:
    """Every count, success rate and sampled-token statistic equal; floats computed from the
    sampler's logprobs (the clipped ratio's loss, `sampler_logprob_gap_*`) equal to far
    below the printed digits: a row's logits carry float32 rounding that depends on the
    batch's shape (~1e-7), though the tokens drawn from them do not."""
    assert [sorted(r) for r in a] == [sorted(r) for r in b]
    for x, y in zip(a, b, strict=True):
        for k, v in x.items():
            if isinstance(v, float):
                assert y[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (x["kind"], k)
            else:
                assert y[k] == v, (x["kind"], k)


GRPO_SMALL = [
    "progress=false",
    "steps=2",
    "tasks_per_step=3",
    "group_size=2",
    "max_new_tokens=6",
    "eval_episodes=3",
    "eval_every=2",
    "save_every=2",
    "micro_batch_episodes=6",
    "env_kwargs={max_episode_steps: 4}",
]


def _grpo_twice(tmp_path: Path, extra: list[str], subprocess_run: bool) -> tuple[list, list]:
    dirs = []
    for i, conc in enumerate([1, 6]):
        sets = [*GRPO_SMALL, *extra, f"concurrency={conc}", f"student={default_tiny_path()}"]
        out = tmp_path / f"r{i}"
        if subprocess_run:  # a vLLM engine per process
            cmd = [sys.executable, "-m", "mentorgym.cli", "train", "configs/sokoban_grpo.yaml"]
            cmd += [arg for s in sets for arg in ("--set", s)] + ["--out", str(out)]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
            assert r.returncode == 0, r.stderr[-3000:]
        else:
            train_from_config(str(ROOT / "configs/sokoban_grpo.yaml"), sets, str(out), None, False)
        dirs.append(out)
    return _metrics(dirs[0]), _metrics(dirs[1])


@pytest.mark.slow
def test_grpo_with_the_hf_sampler_repeats_at_any_concurrency(tmp_path) -> None:
    a, b = _grpo_twice(tmp_path, ["sampler=hf"], subprocess_run=False)
    _agree(a, b)
    assert any(r["kind"] == "train" for r in a) and any(r["kind"] == "eval" for r in a)


@pytest.mark.slow
@pytest.mark.vllm
def test_grpo_with_the_vllm_sampler_repeats_at_any_concurrency(tmp_path) -> None:
    from mentorgym.agents.vllm_engine import vllm_available

    if not vllm_available():
        pytest.skip("vllm is not installed")
    a, b = _grpo_twice(tmp_path, ["sampler=vllm"], subprocess_run=True)
    drop = {"sampler_sync"}  # its only field is a wall time
    a, b = ([r for r in x if r["kind"] not in drop] for x in (a, b))
    _agree(a, b)
    assert any(r["kind"] == "train" for r in a)


@pytest.mark.slow
def test_a_killed_and_resumed_run_gives_the_same_curve(tmp_path, monkeypatch) -> None:
    """GRPO with the hf: sampler, killed before its third step's sampling and resumed from the
    step-2 checkpoint, against the same run not killed: the same metrics.jsonl."""
    from mentorgym.training import onpolicy

    sets = [
        *GRPO_SMALL,
        "steps=3",
        "save_every=1",
        "eval_every=3",
        f"student={default_tiny_path()}",
    ]
    path = str(ROOT / "configs/sokoban_grpo.yaml")
    whole = train_from_config(path, sets, str(tmp_path / "whole"), None, False)
    real_sample = onpolicy.sample

    def sample_then_die(student, cfg, step):
        if step == 2:
            raise RuntimeError("killed")
        return real_sample(student, cfg, step)

    monkeypatch.setattr(onpolicy, "sample", sample_then_die)
    with pytest.raises(RuntimeError, match="killed"):
        train_from_config(path, sets, str(tmp_path / "killed"), None, False)
    monkeypatch.setattr(onpolicy, "sample", real_sample)
    resumed = train_from_config(None, [], None, str(tmp_path / "killed"), False)
    _agree(_metrics(whole), _metrics(resumed))
    assert [r["step"] for r in _metrics(resumed) if r["kind"] == "train"] == [1, 2, 3]
