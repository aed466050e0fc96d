"""Sokoban: generator, Boxoban parsing, rewards, format errors, solver and expert."""

from __future__ import annotations

from pathlib import Path

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import mentorgym  # noqa: F401  (registers the ids)
from mentorgym.envs.sokoban import (
    MOVES,
    Level,
    SokobanEnv,
    format_levels,
    generate_room,
    load_levels,
    parse_level,
    parse_levels,
    play_moves,
    solve,
    solve_level,
)

DATA = Path(__file__).parent / "data" / "sokoban"
IDS = [
    "mentorgym/Sokoban-v0",
    "mentorgym/Sokoban2-v0",
    "mentorgym/Sokoban3-v0",
    "mentorgym/Boxoban-v0",
]


def run_episode(env: gymnasium.Env, seed: int, actor: str) -> bool:
    env.reset(seed=seed)
    while True:
        u = env.unwrapped
        action = u.expert_action() if actor == "expert" else u.random_action()
        _obs, _r, term, trunc, info = env.step(action)
        if term or trunc:
            return bool(info["success"])


def test_expert_solves_default_env_and_random_does_not():
    env = gymnasium.make("mentorgym/Sokoban-v0")
    expert = sum(run_episode(env, s, "expert") for s in range(50)) / 50
    random_rate = sum(run_episode(env, s, "random") for s in range(50)) / 50
    assert expert == 1.0
    assert random_rate < 0.5


@pytest.mark.parametrize("env_id", IDS[1:])
def test_expert_solves_bigger_rooms(env_id: str):
    env = gymnasium.make(env_id)
    assert all(run_episode(env, s, "expert") for s in range(5))


def test_same_seed_same_room_and_different_seeds_differ():
    env = SokobanEnv()
    a, _ = env.reset(seed=7)
    b, _ = env.reset(seed=7)
    assert a == b
    rooms = {SokobanEnv().reset(seed=s)[0][1]["content"] for s in range(20)}
    assert len(rooms) > 10
    assert generate_room((7, 7), 2, 3) == generate_room((7, 7), 2, 3)


@pytest.mark.parametrize("dim,boxes", [((6, 6), 1), ((7, 7), 2), ((8, 8), 3), ((10, 10), 4)])
def test_generated_rooms_are_solvable_and_not_solved(dim: tuple[int, int], boxes: int):
    for seed in range(10):
        lv = generate_room(dim, boxes, seed)
        assert len(lv.boxes) == len(lv.targets) == boxes
        assert (lv.height, lv.width) == dim
        assert not lv.is_solved()
        plan = solve(lv.to_text(), 10.0)
        assert plan, f"seed {seed} unsolvable"
        # the reverse walk bounds the optimal solution
        assert len(plan) <= 12 * boxes + 4
        _p, final = play_moves(lv, plan)
        assert final == set(lv.targets)


def bfs_length(level: Level) -> int | None:
    """Plain breadth-first search over (player, boxes): the optimal move count, slowly."""
    start = (level.player, frozenset(level.boxes))
    goal = frozenset(level.targets)
    frontier, seen, depth = [start], {start}, 0
    while frontier:
        nxt = []
        for p, boxes in frontier:
            if boxes == goal:
                return depth
            for d in range(4):
                q = level.neighbors[d][p]
                if q < 0 or level.walls[q]:
                    continue
                nb = boxes
                if q in boxes:
                    k = level.neighbors[d][q]
                    if k < 0 or level.walls[k] or k in boxes:
                        continue
                    nb = (boxes - {q}) | {k}
                if (q, nb) not in seen:
                    seen.add((q, nb))
                    nxt.append((q, nb))
        frontier, depth = nxt, depth + 1
    return None


def test_solver_is_optimal_against_plain_bfs():
    assert solve("#####\n#@  #\n#$  #\n#.  #\n#####") == ["Down"]
    grid = "######\n#@   #\n# $  #\n#   .#\n######"
    assert solve(grid) == ["Down", "Right", "Right", "Up", "Right", "Down"]
    assert solve("#####\n#@*.#\n#####".replace(".", " ")) == []
    # a box in a corner off target: no solution, and the search says so quickly
    assert solve("#####\n#$ @#\n#  .#\n#####") is None
    for dim, boxes in [((6, 6), 1), ((7, 7), 2)]:
        for seed in range(15):
            lv = generate_room(dim, boxes, seed)
            plan = solve_level(lv)
            assert plan is not None and len(plan) == bfs_length(lv)


def test_solver_plans_replay_in_env():
    env = SokobanEnv(dim_room=(7, 7), num_boxes=2)
    for seed in range(10):
        env.reset(seed=seed)
        plan = solve(env.grid_text())
        assert plan is not None
        total = 0.0
        for m in plan:
            _o, r, term, _t, info = env.step(f"<answer>{m}</answer>")
            total += r
        assert term and info["success"]


@pytest.mark.slow
def test_solver_on_10x10_level_files():
    for name in ["generated_10x10_4box.txt", "handwritten_10x10.txt"]:
        levels = load_levels(DATA / name)
        for lv in levels[:2]:
            plan = solve_level(lv, 60.0)
            assert plan is not None, f"{name} {lv.name}"
            assert play_moves(lv, plan)[1] == set(lv.targets)


BOXOBAN = """; 0
#####
#@$.#
#####

; 1
######
#+ $ #
#  * #
######
"""


def test_boxoban_parsing_headers_and_index(tmp_path: Path):
    levels = parse_levels(BOXOBAN)
    assert [lv.name for lv in levels] == ["0", "1"]
    assert levels[1].player in levels[1].targets  # '+'
    assert len(levels[1].boxes) == 2 and len(levels[1].targets) == 2
    assert levels[1].to_text() == "######\n#+ $ #\n#  * #\n######"
    assert parse_levels(format_levels(levels)) == levels
    path = tmp_path / "levels.txt"
    path.write_text(BOXOBAN)
    env = gymnasium.make("mentorgym/Sokoban-v0", levels=str(path))
    assert env.unwrapped.num_tasks == 2
    obs, info = env.reset(options={"index": 1})
    assert obs[1]["content"].endswith("######\n#+ $ #\n#  * #\n######")
    assert info["task_id"] == "1"
    obs, _ = env.reset(options={"index": 0})
    _o, r, term, _t, info = env.step("<answer>right</answer>")
    assert term and info["success"] and r == pytest.approx(-0.1 + 1 + 10)
    seen = {env.reset(seed=s)[1]["task_id"] for s in range(20)}
    assert seen == {"0", "1"}
    with pytest.raises(ValueError, match="out of range"):
        env.reset(options={"index": 5})


def test_bad_level_text_says_what_is_wrong(tmp_path: Path):
    with pytest.raises(ValueError, match="legal characters"):
        parse_level("#####\n#@X.#\n#####")
    with pytest.raises(ValueError, match="players"):
        parse_level("#####\n# $.#\n#####")
    with pytest.raises(ValueError, match="does not exist"):
        SokobanEnv(levels=str(tmp_path / "missing.txt"))


def _env_on(grid: str, tmp_path: Path, **kw) -> SokobanEnv:
    path = tmp_path / "one.txt"
    path.write_text("; 0\n" + grid + "\n")
    env = SokobanEnv(levels=str(path), **kw)
    env.reset(options={"index": 0})
    return env


def test_rewards_step_wall_box_on_off_solved(tmp_path: Path):
    env = _env_on("#######\n#@$. $#\n#    .#\n#######", tmp_path)
    _o, r, term, _t, info = env.step("<answer>Up</answer>")  # wall: nothing moves
    assert r == pytest.approx(-0.1) and not term and not info["success"]
    assert env.grid_text() == "#######\n#@$. $#\n#    .#\n#######"
    _o, r, *_ = env.step("<answer>Right</answer>")  # box onto target
    assert r == pytest.approx(0.9) and env.grid_text().startswith("#######\n# @* $#")
    _o, r, *_ = env.step("<answer>Right</answer>")  # box off target
    assert r == pytest.approx(-1.1)
    assert env.grid_text() == "#######\n#  +$$#\n#    .#\n#######"
    _o, r, *_ = env.step("<answer>R</answer>")  # two boxes in a row: blocked
    assert r == pytest.approx(-0.1)
    env2 = _env_on("#####\n#@$.#\n#####", tmp_path)
    obs, r, term, trunc, info = env2.step("<answer>RIGHT</answer>")
    assert r == pytest.approx(10.9) and term and not trunc and info["success"]
    assert obs[0]["content"] == "Boxes on targets: 1/1\n#####\n# @*#\n#####"


@pytest.mark.parametrize(
    "action",
    [
        "Up",
        "<answer>jump</answer>",
        "<answer></answer>",
        "<answer>Up",
        None,
        42,
        ["Up"],
        "<answer>Up Left</answer>",
    ],
)
def test_malformed_actions_are_format_errors(action: object):
    env = SokobanEnv()
    env.reset(seed=0)
    before = env.grid_text()
    obs, r, term, trunc, info = env.step(action)  # type: ignore[arg-type]
    assert info["format_error"] is True and info["success"] is False
    assert obs[0]["role"] == "tool" and "Format error" in obs[0]["content"]
    assert r == pytest.approx(-0.1) and not term and not trunc
    assert env.grid_text() == before


def test_several_actions_per_turn(tmp_path: Path):
    env = _env_on("######\n#@ $.#\n######", tmp_path, actions_per_turn=3)
    assert env.expert_action() == "<answer>Right Right</answer>"
    _o, r, term, _t, info = env.step("<answer>r, R</answer>")
    assert term and info["success"] and r == pytest.approx(-0.2 + 1 + 10)
    env = _env_on("######\n#@ $.#\n######", tmp_path, actions_per_turn=2)
    _o, r, term, _t, info = env.step("<answer>Right Right Right</answer>")
    assert info["format_error"] and not term
    assert "at most 2" in info["error"]


def test_expert_caches_plan_and_replans_off_plan(tmp_path: Path):
    env = _env_on("#######\n#@    #\n#  $  #\n#    .#\n#######", tmp_path)
    first = env.expert_action()
    assert first == env.expert_action()  # does not advance the env
    env.step(first)
    plan_id = id(env._plan)
    env.step(env.expert_action())
    assert id(env._plan) == plan_id  # still on the plan: no re-solve
    env.step("<answer>Up</answer>")
    env.step("<answer>Left</answer>")  # back where it started, with the plan made from there
    n = 0
    while not env.solved():
        _o, _r, term, _t, info = env.step(env.expert_action())
        n += 1
        assert n < 20
    assert info["success"]
    assert env.expert_action() is None


def test_render_and_random_action():
    env = gymnasium.make("mentorgym/Sokoban-v0", render_mode="ansi")
    obs, _ = env.reset(seed=1)
    assert obs[0]["role"] == "system" and "Legend" in obs[0]["content"]
    assert env.render() == env.unwrapped.grid_text()
    assert obs[1]["content"].endswith(env.unwrapped.grid_text())
    for _ in range(10):
        a = env.unwrapped.random_action()
        assert a[len("<answer>") : -len("</answer>")] in MOVES


@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id: str):
    check_env(gymnasium.make(env_id).unwrapped, skip_render_check=True)


def test_undo_reverts_walks_and_pushes_with_rewards(tmp_path: Path):
    grid = "#######\n#@$. $#\n#    .#\n#######"
    env = _env_on(grid, tmp_path, undo=True)
    assert "Undo" in env.reset(options={"index": 0})[0][0]["content"]
    _o, r, *_ = env.step("<answer>Undo</answer>")  # nothing to take back: a wasted turn
    assert r == pytest.approx(-0.1) and env.grid_text() == grid
    env.step("<answer>Up</answer>")  # a bump into the wall is not recorded
    env.step("<answer>Right</answer>")  # box onto the target
    env.step("<answer>Down</answer>")  # a walk
    after = env.grid_text()
    _o, r, *_ = env.step("<answer>undo</answer>")  # takes back the walk only
    assert r == pytest.approx(-0.1) and env.grid_text() == "#######\n# @* $#\n#    .#\n#######"
    _o, r, *_ = env.step("<answer>Undo</answer>")  # takes back the push: the box leaves the target
    assert r == pytest.approx(-1.1) and env.grid_text() == grid
    assert env.state() == (8, (9, 12)) and env._on_target == 0
    assert after != grid


def test_undo_is_not_a_move_without_the_option(tmp_path: Path):
    env = _env_on("#####\n#@$.#\n#####", tmp_path)
    _o, _r, _t, _tr, info = env.step("<answer>Undo</answer>")
    assert info["format_error"] and "'Undo' is not a move" in info["error"]
    assert "Undo" not in env.reset(options={"index": 0})[0][0]["content"]


def test_expert_labels_dead_ends_with_undo_and_recovers(tmp_path: Path):
    # Pushing the box left puts it against a wall with no target: a dead end.
    grid = "######\n#  . #\n# $@ #\n#    #\n######"
    plain = _env_on(grid, tmp_path)
    assert plain.expert_action() is not None
    plain.step("<answer>Left</answer>")
    assert plain.expert_action() is None  # no undo: a dead end has no label
    env = _env_on(grid, tmp_path, undo=True)
    env.step("<answer>Left</answer>")
    env.step("<answer>Down</answer>")  # walk on inside the dead end
    assert env.expert_action() == "<answer>Undo</answer>"
    n = 0
    while not env.solved():
        _o, _r, term, _t, info = env.step(env.expert_action())
        n += 1
        assert n < 20
    assert info["success"] and term


@pytest.mark.parametrize("env_id", ["mentorgym/Sokoban-v0", "mentorgym/Sokoban2-v0"])
def test_random_play_with_undo_keeps_the_state_consistent(env_id: str):
    # Undo after any random walk restores each earlier grid exactly (the history is a stack).
    env = gymnasium.make(env_id, undo=True).unwrapped
    for seed in range(5):
        env.reset(seed=seed)
        grids = [env.grid_text()]
        for _ in range(30):
            a = env.random_action()
            if "Undo" in a:
                continue
            env.step(a)
            if env.solved():
                break
            if env.grid_text() != grids[-1]:
                grids.append(env.grid_text())
        while len(grids) > 1 and not env.solved():
            assert env.grid_text() == grids.pop()
            env.step("<answer>Undo</answer>")
        assert env.solved() or env.grid_text() == grids[0]
        assert env._on_target == sum(env._is_target[b] for b in env.state()[1])
