"""Trajectories to examples: target-only mask, exact sampled ids, the truncation rule, the
teacher's ids re-encoded when its tokenizer differs, labels limited to some actors."""

from __future__ import annotations

import pytest

from mentorgym.agents import chat
from mentorgym.agents.chat import window_messages
from mentorgym.agents.trajectory import Trajectory, Turn, context
from mentorgym.training.data import (
    Example,
    collate,
    dedupe,
    examples_from_trajectories,
    iterate_batches,
)


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from mentorgym.agents.tiny import default_tiny_path

    return AutoTokenizer.from_pretrained(default_tiny_path())


def _traj(n: int = 3, sampled: list[int] | None = None) -> Trajectory:
    turns = []
    for k in range(n):
        obs = [{"role": "user", "content": f"grid {k}\n#  @ #"}]
        if k == 0:
            obs = [{"role": "system", "content": "You play Sokoban."}, *obs]
        turns.append(
            Turn(
                observation=obs,
                actor="student",
                action="<answer>Up</answer>",
                teacher_action="<answer>Left</answer>" if k != 1 else "<answer>Up</answer>",
                token_ids=sampled if k == 1 else None,
            )
        )
    return Trajectory(env_id="mentorgym/Sokoban-v0", seed=7, turns=turns)


def test_mask_covers_exactly_the_target_tokens(tok):
    traj = _traj()
    exs, stats = examples_from_trajectories([traj], tok, max_seq_len=4096)
    assert stats.examples == 3 and stats.dropped == 0
    ex = exs[2]
    assert ex.input_ids[: ex.n_prompt] == chat.encode_chat(tok, context(traj, 2))
    assert ex.input_ids[ex.n_prompt :] == chat.target_ids(tok, text="<answer>Left</answer>")
    b = collate([ex, exs[0]], pad_id=tok.pad_token_id)
    mask = b["mask_BT"][0]
    labels = b["labels_BT"][0]
    picked = labels[mask.bool()].tolist()
    assert picked == ex.input_ids[ex.n_prompt :]
    # The shorter row is right-padded and masked out past its end.
    n0 = len(exs[0].input_ids) - 1
    assert b["attention_mask_BT"][1, n0:].sum() == 0 and b["mask_BT"][1, n0:].sum() == 0
    assert (
        b["input_ids_BT"][0, 1:].tolist()[: len(ex.input_ids) - 2]
        == labels[:-1].tolist()[: len(ex.input_ids) - 2]
    )


def test_sampled_ids_are_used_when_the_label_is_the_action(tok):
    sampled = tok.encode("<answer>Up</answer>", add_special_tokens=False)[
        ::-1
    ]  # not a re-tokenization
    traj = _traj(sampled=sampled)
    exs, stats = examples_from_trajectories([traj], tok, max_seq_len=4096)
    assert stats.exact_ids == 1
    assert exs[1].input_ids[exs[1].n_prompt :] == sampled
    # Later contexts carry the sampled ids of the earlier turn, too.
    assert (
        chat.encode_chat_with_actions(tok, context(traj, 2), [None, sampled])
        == exs[2].input_ids[: exs[2].n_prompt]
    )


def test_truncation_drops_whole_turns_and_counts(tok):
    """The one truncation rule: a turn that does not fit is left out, contexts are never cut."""
    traj = _traj(n=8)
    full, _ = examples_from_trajectories([traj], tok, max_seq_len=100_000)
    limit = len(full[3].input_ids)
    exs, stats = examples_from_trajectories([traj], tok, max_seq_len=limit)
    assert [e.input_ids for e in exs] == [e.input_ids for e in full[:4]]
    assert stats.dropped == 8 - 4 and stats.examples == 4
    tiny, stats2 = examples_from_trajectories([traj], tok, max_seq_len=5)
    assert tiny == [] and stats2.dropped == 8
    assert "dropped" in stats2.log(5)


def test_foreign_ids_are_reencoded_and_actors_keep_the_history(tok):
    """A teacher's ids from another tokenizer never reach the student: its turns are encoded
    from their text. Labels limited to the student's turns keep the teacher's turns in the
    context (the history the student saw), unlabeled."""
    foreign = [9999, 9998, 9997]  # ids of some other vocabulary
    traj = _traj(n=3)
    traj.turns[1].actor = "teacher"
    traj.turns[1].token_ids = foreign
    traj.turns[1].teacher_action = None
    kept, _ = examples_from_trajectories([traj], tok, max_seq_len=4096)
    assert kept[1].input_ids[kept[1].n_prompt :] == foreign  # trusted: used as they are
    exs, stats = examples_from_trajectories([traj], tok, max_seq_len=4096, foreign_ids=False)
    assert stats.exact_ids == 0
    assert exs[1].input_ids[exs[1].n_prompt :] == chat.target_ids(tok, text="<answer>Up</answer>")
    assert all(i not in e.input_ids for e in exs for i in foreign)
    assert exs[2].input_ids[: exs[2].n_prompt] == chat.encode_chat(tok, context(traj, 2))
    only, stats = examples_from_trajectories(
        [traj], tok, max_seq_len=4096, foreign_ids=False, actors=frozenset({"student"})
    )
    assert [e.meta["turn"] for e in only] == [0, 2] and stats.no_label == 1
    assert stats.unlabeled == 0  # left out by the actor filter, not for want of a label
    # the student's turn 2 still sees the teacher's turn 1 in its context
    assert only[1].input_ids == exs[2].input_ids


def test_window_and_teacher_target_rules(tok):
    traj = _traj(n=4)
    msgs = context(traj, 3)
    assert window_messages(msgs, 1, system_prompt=False) == traj.turns[3].observation
    w2 = window_messages(msgs, 2)
    assert w2[0]["role"] == "system" and [m["role"] for m in w2[1:]] == [
        "user",
        "assistant",
        "user",
    ]
    traj.turns[0].teacher_action = None
    exs, stats = examples_from_trajectories(
        [traj], tok, max_seq_len=4096, last_turns=1, system_prompt=False
    )
    assert stats.no_label == 1 and stats.unlabeled == 1 and len(exs) == 3
    assert exs[-1].input_ids[: exs[-1].n_prompt] == chat.encode_chat(tok, traj.turns[3].observation)
    acts, _ = examples_from_trajectories([traj], tok, max_seq_len=4096, target="action")
    assert len(acts) == 4


def test_dedupe_and_resumable_batch_stream():
    exs = [Example([1, 2, 3], 1), Example([1, 2, 3], 1), Example([4, 5], 1)]
    assert len(dedupe(exs)) == 2
    data = [Example([i, i + 1], 1) for i in range(10)]
    a = iterate_batches(data, 4, seed=3)
    first = [[e.input_ids[0] for e in next(a)] for _ in range(6)]
    b = iterate_batches(data, 4, seed=3, start_batch=4)
    assert [e.input_ids[0] for e in next(b)] == first[4]
    r0 = next(iterate_batches(data, 4, seed=3, rank=0, world_size=2))
    r1 = next(iterate_batches(data, 4, seed=3, rank=1, world_size=2))
    assert sorted(e.input_ids[0] for e in r0 + r1) == sorted(first[0])
