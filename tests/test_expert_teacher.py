"""The solver as a token-level teacher: its scores against the formula computed directly."""

from __future__ import annotations

import math

import pytest

from mentorgym.agents.expert_teacher import ExpertTeacher, best_moves
from mentorgym.envs.sokoban import SokobanEnv


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from mentorgym.agents.tiny import default_tiny_path

    return AutoTokenizer.from_pretrained(default_tiny_path())


def _conversation(grid: str, tmp_path, undo: bool = False, moves: tuple[str, ...] = ()):
    path = tmp_path / "level.txt"
    path.write_text("; 0\n" + grid + "\n")
    env = SokobanEnv(levels=str(path), undo=undo)
    messages, _ = env.reset(options={"index": 0})
    for m in moves:
        obs, *_ = env.step(f"<answer>{m}</answer>")
        messages = [*messages, {"role": "assistant", "content": m}, *obs]
    return messages, env


def _direct(teacher: ExpertTeacher, dist: dict, ids: list[int]) -> list[float]:
    """q(t | s) = (1 - delta) P(s + t) / P(s) + delta / V, or 1/V where P(s) = 0."""
    out = []
    for i in range(len(ids)):
        s, st = tuple(ids[:i]), tuple(ids[: i + 1])
        ps = sum(p for a, p in dist.items() if a[:i] == s)
        pst = sum(p for a, p in dist.items() if a[: i + 1] == st)
        if ps == 0:
            out.append(math.log(1 / teacher.vocab))
        else:
            out.append(math.log((1 - teacher.delta) * pst / ps + teacher.delta / teacher.vocab))
    return out


def test_mass_on_the_optimal_moves_and_ties_shared(tok, tmp_path):
    # Player in the middle of a corridor: the box is two cells right, so Right is optimal.
    messages, env = _conversation("#######\n#@ $ .#\n#######", tmp_path)
    teacher = ExpertTeacher(tok, eps=0.01, delta=0.0)
    dist = teacher.distribution(messages)
    right = teacher.action_ids("Right")
    assert dist[right] == pytest.approx(0.99)
    assert sum(dist.values()) == pytest.approx(1.0)
    assert env.expert_action() == "<answer>Right</answer>"
    # Two optimal first moves (Right then Down, or Down then Right, then the push): split.
    messages, _ = _conversation("######\n#@   #\n#  $.#\n#    #\n######", tmp_path)
    dist = teacher.distribution(messages)
    assert set(best_moves("######\n#@   #\n#  $.#\n#    #\n######", False)[1]) == {"Right", "Down"}
    for word in ("Right", "Down"):
        assert dist[teacher.action_ids(word)] == pytest.approx(0.495)
    assert dist[teacher.action_ids("Up")] == pytest.approx(0.005)


def test_scores_match_the_direct_formula_and_chain_to_log_p(tok, tmp_path):
    messages, _ = _conversation("#######\n#@ $ .#\n#######", tmp_path)
    exact = ExpertTeacher(tok, eps=0.01, delta=0.0)
    dist = exact.distribution(messages)
    for word in ("Right", "Left", "Up", "Down"):
        ids = list(exact.action_ids(word))
        lps = exact.score(messages, ids).logprobs
        assert lps == pytest.approx(_direct(exact, dist, ids))
        assert sum(lps) == pytest.approx(math.log(dist[tuple(ids)]))  # the chain rule
    mixed = ExpertTeacher(tok, eps=0.05, delta=1e-3)
    dist = mixed.distribution(messages)
    junk = list(tok.encode("<answer>Jump", add_special_tokens=False))
    for ids in (list(mixed.action_ids("Right")), list(mixed.action_ids("Down")), junk):
        assert mixed.score(messages, ids).logprobs == pytest.approx(_direct(mixed, dist, ids))


def test_next_token_distribution_sums_to_one(tok, tmp_path):
    messages, _ = _conversation("#######\n#@ $ .#\n#######", tmp_path)
    teacher = ExpertTeacher(tok, eps=0.01, delta=1e-3)
    prefix = list(teacher.action_ids("Right"))[:-2]
    total = sum(
        math.exp(teacher.score(messages, prefix + [t]).logprobs[-1]) for t in range(len(tok))
    )
    assert total == pytest.approx(1.0, rel=1e-6)


def test_dead_end_puts_the_mass_on_undo(tok, tmp_path):
    grid = "######\n#  . #\n# $@ #\n#    #\n######"
    messages, env = _conversation(grid, tmp_path, undo=True, moves=("Left",))
    teacher = ExpertTeacher(tok, eps=0.01, delta=0.0)
    dist = teacher.distribution(messages)
    assert dist[teacher.action_ids("Undo")] == pytest.approx(0.99)
    assert env.expert_action() == "<answer>Undo</answer>"
    assert teacher.act(messages).text == "<answer>Undo</answer>"
    plain, _ = _conversation(grid, tmp_path, moves=("Left",))
    flat = teacher.distribution(plain)  # no undo: the expert has no preference
    assert len(flat) == 4 and all(p == pytest.approx(0.25) for p in flat.values())


def test_agrees_with_the_env_expert_on_generated_rooms(tok):
    env = SokobanEnv(dim_room=(7, 7), num_boxes=2, undo=True)
    teacher = ExpertTeacher(tok)
    for seed in range(5):
        messages, _ = env.reset(seed=seed)
        for _ in range(6):
            expert = env.expert_action()
            if expert is None:
                break
            _, best = best_moves(env.grid_text(), True)
            assert expert[len("<answer>") : -len("</answer>")] in best
            obs, _r, term, *_ = env.step(env.random_action())
            messages = [*messages, {"role": "assistant", "content": "x"}, *obs]
            if term:
                break
            assert teacher.distribution(messages)  # reads the latest grid
