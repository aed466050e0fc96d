"""HFPolicy and chat encoding on the tiny model: token fidelity, batching, logprobs, stops."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
import torch

from mentorgym.agents import tiny
from mentorgym.agents.base import Action, Policy, Teacher
from mentorgym.agents.chat import (
    completion_suffix_ids,
    encode_chat,
    encode_chat_with_actions,
    end_of_turn_id,
    target_ids,
)
from mentorgym.agents.hf import HFPolicy
from mentorgym.envs.base import assistant, system, tool, user
from mentorgym.errors import PolicyError, RequestError

GRID = "#####\n# @$.#\n#####"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # No env episodes: these tests are about the backend, not the tokenizer corpus.
    return tiny.build_tiny(tmp_path_factory.mktemp("tiny") / "model", env_ids=[], seed=0)


@pytest.fixture(scope="module")
def policy(tiny_dir: Path) -> HFPolicy:
    return HFPolicy(str(tiny_dir), temperature=1.0, max_new_tokens=12, seed=0, device="cpu")


def _histories() -> list[list]:
    return [
        [system("You play Sokoban."), user(GRID)],
        [user("What is 2 + 3?")],
        [
            system("Answer briefly."),
            user("A much longer question " * 6),
            assistant("ok"),
            tool("42"),
        ],
    ]


def _forward_logprobs(policy: HFPolicy, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t >= 1 by one plain forward pass, no cache, no padding."""
    with torch.no_grad():
        logits_TV = policy.model(torch.tensor([ids])).logits[0].float()
    logp_TV = torch.log_softmax(logits_TV[:-1], dim=-1)
    return logp_TV.gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]


def test_implements_policy_and_teacher(policy: HFPolicy, tiny_dir: Path) -> None:
    assert isinstance(policy, Policy) and isinstance(policy, Teacher)
    assert policy.name == "hf:" + str(tiny_dir)
    assert policy.device.type == "cpu" and policy.model.dtype == torch.float32


def test_encode_is_the_templates_text_tokenized_per_message(policy: HFPolicy) -> None:
    tok = policy.tokenizer
    msgs = _histories()[2]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert encode_chat(tok, msgs) == tok(text, add_special_tokens=False)["input_ids"]
    assert policy.encode(msgs) == encode_chat(tok, msgs)
    no_gen = encode_chat(tok, msgs, add_generation_prompt=False)
    assert encode_chat(tok, msgs)[: len(no_gen)] == no_gen


def test_completion_suffix_and_target_rule(policy: HFPolicy) -> None:
    tok = policy.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert completion_suffix_ids(tok) == [im_end, *tok("\n", add_special_tokens=False)["input_ids"]]
    assert end_of_turn_id(tok) == im_end
    assert target_ids(tok, token_ids=[5, 6, im_end]) == [5, 6, im_end]
    assert target_ids(tok, text="<answer>Up</answer>") == [
        *tok("<answer>Up</answer>", add_special_tokens=False)["input_ids"],
        im_end,
    ]
    with pytest.raises(ValueError):
        target_ids(tok)


def test_prompt_at_next_turn_begins_with_prompt_and_sampled_ids(policy: HFPolicy) -> None:
    tok = policy.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    msgs = [system("You play Sokoban."), user(GRID)]
    prompt_0 = encode_chat(tok, msgs)
    # A sample that stopped on end-of-turn and one cut by length (no end-of-turn sampled).
    for sampled in ([300, 17, 45, im_end], [300, 17, 45]):
        later = [
            *msgs,
            assistant(tok.decode(sampled, skip_special_tokens=True)),
            tool("moved"),
            user(GRID),
        ]
        prompt_1 = encode_chat_with_actions(tok, later, [sampled])
        assert prompt_1[: len(prompt_0) + len(sampled)] == prompt_0 + sampled
        # The turn is closed exactly once, then the next messages follow as they render alone.
        rest = prompt_1[len(prompt_0) + len(sampled) :]
        closing = (
            completion_suffix_ids(tok)[1:] if sampled[-1] == im_end else completion_suffix_ids(tok)
        )
        assert rest[: len(closing)] == closing
        assert (
            rest[len(closing) :]
            == encode_chat(tok, later)[len(encode_chat(tok, later[:3], False)) :]
        )


def test_policy_reencodes_its_own_actions_with_the_sampled_ids(policy: HFPolicy) -> None:
    msgs = [system("You play Sokoban."), user(GRID)]
    prompt_0 = policy.encode(msgs)
    (action,) = policy.act_batch([msgs], episodes=["ep-a"])
    later = [*msgs, assistant(action.text), tool("moved")]
    head = len(prompt_0) + len(action.token_ids)
    assert policy.encode(later, episode="ep-a")[:head] == prompt_0 + action.token_ids
    policy.end_episode("ep-a")
    assert len(policy.sampled) == 0


def test_sampled_ids_are_kept_per_episode_not_per_text(policy: HFPolicy) -> None:
    """Two group members that wrote the same text with different ids keep their own ids."""
    tok = policy.tokenizer
    msgs = [system("You play Sokoban."), user(GRID)]
    text = "<answer>Up</answer>"
    retokenized = tok(text, add_special_tokens=False)["input_ids"]
    # The same text as two different id sequences (one split into single characters).
    ids_a = list(retokenized)
    ids_b = [i for ch in text for i in tok(ch, add_special_tokens=False)["input_ids"]]
    assert ids_a != ids_b and tok.decode(ids_b) == text
    policy.sampled.remember("a", 0, text, ids_a)
    policy.sampled.remember("b", 0, text, ids_b)
    later = [*msgs, assistant(text), user(GRID)]
    head = len(policy.encode(msgs))
    assert policy.encode(later, episode="a")[head : head + len(ids_a)] == ids_a
    assert policy.encode(later, episode="b")[head : head + len(ids_b)] == ids_b
    # A turn whose text changed since it was sampled is tokenized, not replaced by stale ids.
    edited = [*msgs, assistant("<answer>Down</answer>"), user(GRID)]
    assert policy.encode(edited, episode="b") == policy.encode(edited)
    policy.end_episode("a")
    policy.end_episode("b")


def test_max_new_tokens_is_capped_to_what_the_window_leaves(policy: HFPolicy) -> None:
    msgs = [system("You play Sokoban."), user(GRID)]
    n = len(policy.encode(msgs))
    window, policy.context_window = policy.context_window, n + 3
    try:
        (a,) = policy.try_act_batch([msgs])
        assert isinstance(a, Action) and len(a.token_ids) <= 3
        policy.context_window = n
        (refused,) = policy.try_act_batch([msgs])
        assert isinstance(refused, RequestError) and "context window" in str(refused)
        with pytest.raises(RequestError):
            policy.act_batch([msgs])
    finally:
        policy.context_window = window


def test_act_batch_ids_decode_to_text_and_logprobs_are_valid(policy: HFPolicy) -> None:
    actions = policy.act_batch(_histories())
    assert len(actions) == 3
    for a in actions:
        assert a.token_ids and len(a.token_ids) == len(a.logprobs) <= policy.max_new_tokens
        assert policy.tokenizer.decode(a.token_ids, skip_special_tokens=True) == a.text
        assert all(math.isfinite(lp) and lp <= 0 for lp in a.logprobs)
        assert a.meta["finish_reason"] in ("stop", "length")
        assert policy.pad_id not in a.token_ids[:-1]


def test_greedy_batch_equals_one_by_one_and_an_uncached_loop(policy: HFPolicy) -> None:
    prompts = [policy.encode(h) for h in _histories()]
    assert len({len(p) for p in prompts}) == 3  # different lengths: left padding is exercised
    batch = policy.generate(prompts, max_new_tokens=8, temperature=0.0, top_p=1.0)
    for prompt, g in zip(prompts, batch, strict=True):
        (alone,) = policy.generate([prompt], max_new_tokens=8, temperature=0.0, top_p=1.0)
        assert g.token_ids == alone.token_ids
        assert g.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
        ids = list(prompt)  # reference: argmax of a full forward pass per step
        for t in g.token_ids:
            with torch.no_grad():
                ref = int(policy.model(torch.tensor([ids])).logits[0, -1].argmax())
            assert t == ref
            ids.append(t)
            if t in policy.eos_ids:
                break


def test_score_equals_a_direct_forward_and_the_sampling_logprobs(policy: HFPolicy) -> None:
    msgs = _histories()[0]
    prompt = policy.encode(msgs)
    for temperature in (1.0, 0.0):  # T=1 samples and greedy both report the plain distribution
        (g,) = policy.generate(
            [prompt], max_new_tokens=10, temperature=temperature, top_p=1.0, seed=3
        )
        scores = policy.score(msgs, g.token_ids, top_k=3)
        direct = _forward_logprobs(policy, prompt + g.token_ids)[len(prompt) - 1 :]
        assert scores.logprobs == pytest.approx(direct.tolist(), abs=1e-4)
        assert scores.logprobs == pytest.approx(g.logprobs, abs=1e-4)
        assert len(scores.top_logprobs) == len(g.token_ids)
        for lp, top in zip(scores.logprobs, scores.top_logprobs, strict=True):
            assert len(top) == 3 and max(top.values()) >= lp - 1e-5


def test_score_batch_matches_single_scores_under_right_padding(policy: HFPolicy) -> None:
    items = [(h, [300, 301, 302][: i + 1]) for i, h in enumerate(_histories())]
    batched = policy.score_batch(items)
    for (msgs, ids), s in zip(items, batched, strict=True):
        assert s.logprobs == pytest.approx(policy.score(msgs, ids).logprobs, abs=1e-4)
        assert s.top_logprobs is None
    assert policy.score_batch([(_histories()[1], [])])[0].logprobs == []


def test_prompt_logprobs_match_a_direct_forward(policy: HFPolicy) -> None:
    ids = policy.encode(_histories()[0])
    lps, tops = policy.prompt_logprobs(ids, top_k=2)
    assert lps[0] is None and len(lps) == len(ids)
    assert lps[1:] == pytest.approx(_forward_logprobs(policy, ids).tolist(), abs=1e-4)
    assert tops[0] == {} and all(len(t) == 2 for t in tops[1:])


def test_tempered_and_top_p_logprobs_are_of_the_sampling_distribution(policy: HFPolicy) -> None:
    prompt = policy.encode(_histories()[1])
    (g,) = policy.generate([prompt], max_new_tokens=6, temperature=0.5, top_p=1.0, seed=1)
    with torch.no_grad():
        logits_TV = policy.model(torch.tensor([prompt + g.token_ids])).logits[0].float()
    logp_TV = torch.log_softmax(logits_TV[len(prompt) - 1 : -1] / 0.5, dim=-1)
    expected = logp_TV.gather(-1, torch.tensor(g.token_ids)[:, None])[:, 0]
    assert g.logprobs == pytest.approx(expected.tolist(), abs=1e-4)
    # A nucleus of one token: the sample is the argmax and has probability 1 after renormalizing.
    (nucleus,) = policy.generate([prompt], max_new_tokens=6, temperature=1.0, top_p=1e-6, seed=1)
    (greedy,) = policy.generate([prompt], max_new_tokens=6, temperature=0.0, top_p=1.0)
    assert nucleus.token_ids == greedy.token_ids
    assert nucleus.logprobs == pytest.approx([0.0] * len(nucleus.logprobs), abs=1e-6)


def test_sampling_is_seeded(tiny_dir: Path, policy: HFPolicy) -> None:
    prompts = [policy.encode(h) for h in _histories()]
    a = policy.generate(prompts, max_new_tokens=8, temperature=1.0, top_p=0.9, seed=7)
    b = policy.generate(prompts, max_new_tokens=8, temperature=1.0, top_p=0.9, seed=7)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    twin = HFPolicy(
        str(tiny_dir), max_new_tokens=8, seed=0, model=policy.model, tokenizer=policy.tokenizer
    )
    other = HFPolicy(
        str(tiny_dir), max_new_tokens=8, seed=0, model=policy.model, tokenizer=policy.tokenizer
    )
    assert [x.token_ids for x in twin.act_batch(_histories())] == [
        x.token_ids for x in other.act_batch(_histories())
    ]


def test_stop_strings_cut_text_before_and_ids_after_the_completing_token(policy: HFPolicy) -> None:
    prompt = policy.encode(_histories()[0])
    (full,) = policy.generate([prompt], max_new_tokens=12, temperature=0.0, top_p=1.0)
    dec = policy.tokenizer.decode
    # A stop string that first completes at the 4th token: the tail of that token's text.
    n_stop = next(n for n in range(4, 12) if dec(full.token_ids[:n]).strip())
    stop = dec(full.token_ids[:n_stop], skip_special_tokens=True)[-2:]
    (cut,) = policy.generate([prompt], max_new_tokens=12, temperature=0.0, top_p=1.0, stop=[stop])
    first = next(
        n for n in range(1, 13) if stop in dec(full.token_ids[:n], skip_special_tokens=True)
    )
    assert cut.token_ids == full.token_ids[:first]
    assert cut.logprobs == pytest.approx(full.logprobs[:first], abs=1e-5)
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.finish_reason == "stop" and full.finish_reason in ("stop", "length")


def test_concurrent_callers_do_not_interleave(policy: HFPolicy) -> None:
    prompts = [policy.encode(h) for h in _histories()]
    expected = policy.generate(prompts, max_new_tokens=6, temperature=0.0, top_p=1.0)
    results: list[list] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(policy.generate(prompts, max_new_tokens=6, temperature=0.0, top_p=1.0))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all([g.token_ids for g in r] == [g.token_ids for g in expected] for r in results)


def test_missing_checkpoints_raise_policy_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    with pytest.raises(PolicyError, match="no checkpoint directory"):
        HFPolicy(str(tmp_path / "nope"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PolicyError, match="mentorgym-test/no-such-model.*local checkpoint path"):
        HFPolicy("mentorgym-test/no-such-model")
    with pytest.raises(ValueError, match="at least one token"):
        HFPolicy.generate(object.__new__(HFPolicy), [[]], max_new_tokens=1, temperature=1, top_p=1)


def test_templates_that_rewrite_earlier_turns_keep_earlier_ids(policy: HFPolicy) -> None:
    import copy

    tok = copy.deepcopy(policy.tokenizer)
    # Like Qwen3 stripping <think>: assistant turns before the last user message lose their text.
    tok.chat_template = (
        "{%- set ns = namespace(last=0) %}"
        "{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last = loop.index0 %}{%- endif %}"
        "{%- endfor %}"
        "{%- for m in messages %}"
        "{%- set c = '' if (m.role == 'assistant' and loop.index0 < ns.last) else m.content %}"
        "{{- '<|im_start|>' + m.role + '\\n' + c + '<|im_end|>\\n' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )
    msgs = [user("first"), assistant("<answer>Up</answer>")]
    before = encode_chat(tok, msgs, add_generation_prompt=False)
    after = encode_chat(tok, [*msgs, user("second")])
    assert after[: len(before)] == before
    assert (
        after[len(before) :]
        == tok("<|im_start|>user\nsecond<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    )
