"""The segment memo of `encode_chat_with_actions`: the same ids as encoding from scratch, and
a turn's prompt renders the chat template only for the messages it adds."""

from __future__ import annotations

import copy

from transformers import AutoTokenizer

import mentorgym
from mentorgym.agents import chat
from mentorgym.agents.tiny import default_tiny_path


def _episode(tok, turns: int):
    env = mentorgym.make("mentorgym/Sokoban-v0")
    msgs, _ = env.reset(seed=0)
    hist, acts = list(msgs), []
    for k in range(turns):
        a = f"<answer>{['Up', 'Left', 'Down', 'Right'][k % 4]}</answer>"
        hist.append({"role": "assistant", "content": a})
        acts.append(chat.text_ids(tok, a) + [chat.end_of_turn_id(tok)])
        obs, *_ = env.step(a)
        hist += list(obs)
    return hist, acts


def test_memo_gives_the_ids_of_a_fresh_encoding_and_renders_only_new_messages(monkeypatch):
    tok = AutoTokenizer.from_pretrained(default_tiny_path())
    hist, acts = _episode(tok, 6)
    renders = []
    real = chat.render
    monkeypatch.setattr(chat, "render", lambda *a, **k: renders.append(1) or real(*a, **k))
    cold = copy.deepcopy(tok)  # a tokenizer with an empty memo
    for k in range(1, 7):
        upto = 2 + 2 * (k - 1)  # the prompt of turn k: system, task, then (action, observation)s
        before = len(renders)
        warm_ids = chat.encode_chat_with_actions(tok, hist[:upto], acts[: k - 1])
        warm_renders = len(renders) - before
        fresh = copy.deepcopy(cold)
        assert warm_ids == chat.encode_chat_with_actions(fresh, hist[:upto], acts[: k - 1])
        if k > 2:  # turn k adds one action and one observation: a bounded number of renders
            assert warm_renders <= 6, (k, warm_renders)
    # From scratch the last prompt renders the template for every message again.
    before = len(renders)
    chat.encode_chat_with_actions(copy.deepcopy(cold), hist[:12], acts[:5])
    assert len(renders) - before > 20


def test_unhashable_message_fields_encode_without_the_memo():
    tok = AutoTokenizer.from_pretrained(default_tiny_path())
    msgs = [{"role": "user", "content": "hi", "extra": ["unhashable"]}]
    plain = [{"role": "user", "content": "hi"}]
    assert chat.encode_chat(tok, msgs) == chat.encode_chat(tok, plain)
