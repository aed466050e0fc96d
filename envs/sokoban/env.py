"""SokobanEnv: push every box onto a target, one text turn at a time."""

from __future__ import annotations

import re
from typing import Any

from mentorgym.envs.base import Message, SkillSummary, StepResult, TextEnv, TurnRecord
from mentorgym.envs.sokoban.level import MOVES, Level, generate_room, load_levels
from mentorgym.envs.sokoban.solver import solve_level

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_SPLIT_RE = re.compile(r"[\s,;]+")
_DIRECTION = {"up": 0, "u": 0, "down": 1, "d": 1, "left": 2, "l": 2, "right": 3, "r": 3}
UNDO = 4
"""The action index of `Undo` (only with `undo=True`)."""
UNDO_WORD = "Undo"

STEP_REWARD = -0.1
BOX_ON_REWARD = 1.0
BOX_OFF_REWARD = -1.0
SOLVED_REWARD = 10.0

_W, _F, _B, _T, _P, _BT, _PT = (ord(c) for c in "# $.@*+")


def system_prompt(actions_per_turn: int, undo: bool = False) -> str:
    if actions_per_turn == 1:
        fmt = "Answer with one move per turn: <answer>Up</answer>, <answer>Down</answer>, <answer>Left</answer> or <answer>Right</answer>."
    else:
        fmt = (
            f"Answer with 1 to {actions_per_turn} moves per turn, separated by spaces, "
            "e.g. <answer>Up Left</answer>. More moves than that is a format error."
        )
    if undo:
        fmt += " <answer>Undo</answer> takes back your last move or push (a box pushed into a corner can be recovered)."
    return (
        "You are playing Sokoban. Push every box onto a target.\n"
        "Legend: # wall, space floor, $ box, . target, * box on target, @ you, + you on target.\n"
        "Moving into a box pushes it one cell, if the cell beyond is floor or a target. "
        "You cannot pull boxes or push two boxes at once. Moving into a wall does nothing.\n"
        "Rewards: -0.1 per move, +1 for a box onto a target, -1 for a box off a target, "
        "+10 when every box is on a target.\n"
        f"{fmt} Moves are Up, Down, Left, Right (or U, D, L, R), in any case."
    )


class SokobanEnv(TextEnv):
    """Sokoban on a text grid: seeded solvable rooms or Boxoban-format level files.

    Arguments: `dim_room = (height, width)` and `num_boxes` for generated rooms;
    `max_moves` bounds their known solution (default `12 * num_boxes + 4`); `levels=PATH`
    plays a Boxoban-format file instead (`reset(options={"index": k})` picks level k, a seed
    picks one at random; `num_tasks` is the number of levels). Without a file, `index` k is
    the room generated from seed k.

    With `undo=True` the word `Undo` is a move too: it reverts the last move that changed the
    position (a walk or a push; a bump into a wall changes nothing and is not recorded), so
    every mistake is recoverable, and `expert_action` labels a dead end (no solution from
    the position) with `Undo`. Undo with nothing to take back does nothing. Its reward is
    the step cost plus the box change it makes (+1 onto a target, -1 off one).

    Each turn's `<answer>` holds 1 to `actions_per_turn` moves; more moves, an unknown word
    or no answer is a format error (a tool message that says what to write, the env does not
    move, reward -0.1 for the wasted turn). Rewards per executed move: -0.1, +1 for a box onto
    a target, -1 for a box off one, +10 when solved; a multi-move turn stops at the solving
    move. `info["success"]` is True only on the step that solves the room. The observation
    is `Boxes on targets: k/n` and the grid, one row per line.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        dim_room: tuple[int, int] = (6, 6),
        num_boxes: int = 1,
        levels: str | None = None,
        actions_per_turn: int = 1,
        max_moves: int | None = None,
        solver_time_limit_s: float = 10.0,
        undo: bool = False,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not supported; use 'ansi' or None")
        if actions_per_turn < 1:
            raise ValueError(f"actions_per_turn must be at least 1, got {actions_per_turn}")
        self.dim_room = (int(dim_room[0]), int(dim_room[1]))
        self.num_boxes = int(num_boxes)
        self.max_moves = max_moves
        self.actions_per_turn = int(actions_per_turn)
        self.solver_time_limit_s = solver_time_limit_s
        self.undo = bool(undo)
        self.levels: list[Level] | None = load_levels(levels) if levels is not None else None
        self.num_tasks = len(self.levels) if self.levels is not None else None
        if self.levels is None:
            # fail at construction, not at the first reset, when the room cannot hold the boxes
            generate_room(self.dim_room, self.num_boxes, 0, self.max_moves)
        self._system: Message = {
            "role": "system",
            "content": system_prompt(self.actions_per_turn, self.undo),
        }
        self.level: Level | None = None
        self.task_id: str | None = None
        self._plan: dict[tuple[int, tuple[int, ...]], int] = {}
        self._plan_moves: list[int] = []
        self._history: list[tuple[int, int, int]] = []
        """(player cell before, box cell before, box cell after; -1 when no push) per move."""

    # --- episode ------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[list[Message], dict[str, Any]]:
        super().reset(seed=seed)
        index = None if options is None else options.get("index")
        if self.levels is not None:
            if index is None:
                index = int(self.np_random.integers(len(self.levels)))
            elif not 0 <= int(index) < len(self.levels):
                raise ValueError(
                    f"index {index} is out of range: the level file has {len(self.levels)} levels (0..{len(self.levels) - 1})"
                )
            self._load(self.levels[int(index)])
            self.task_id = self.levels[int(index)].name or str(index)
        else:
            room_seed = int(index) if index is not None else int(self.np_random.integers(1 << 62))
            self._load(generate_room(self.dim_room, self.num_boxes, room_seed, self.max_moves))
            self.task_id = str(room_seed)
        obs = {"role": "user", "content": self._observation()}
        info = {"task_id": self.task_id, "success": False, "boxes_on_target": self._on_target}
        return [self._system, obs], info

    def _load(self, level: Level) -> None:
        self.level = level
        w = level.width
        row = w + 1
        n = w * level.height
        self._nbr = level.neighbors
        self._walls = level.walls
        self._is_target = bytearray(n)
        for t in level.targets:
            self._is_target[t] = 1
        self._box = bytearray(n)
        for b in level.boxes:
            self._box[b] = 1
        self._player = level.player
        self._on_target = sum(self._is_target[b] for b in level.boxes)
        self._n = len(level.boxes)
        # display buffer with the newlines in place: a move rewrites at most three bytes
        self._pos = [(i // w) * row + i % w for i in range(n)]
        self._floor_ch = bytes(_T if self._is_target[i] else _F for i in range(n))
        disp = bytearray(level.to_text(), "ascii")
        self._disp = disp
        self._plan = {}
        self._plan_moves = []
        self._history = []

    def _observation(self) -> str:
        return f"Boxes on targets: {self._on_target}/{self._n}\n{self._disp.decode()}"

    def step(self, action: str) -> StepResult:
        if self.level is None:
            raise self.step_before_reset()
        moves = self._parse(action)
        if isinstance(moves, str):
            msgs, _r, term, trunc, info = self.format_error(moves, self._expected())
            info["success"] = False
            info["boxes_on_target"] = self._on_target
            return msgs, STEP_REWARD, term, trunc, info
        reward = 0.0
        solved = False
        for d in moves:
            reward += self._move(d)
            if self._on_target == self._n:
                solved = True
                reward += SOLVED_REWARD
                break
        obs: Message = {"role": "user", "content": self._observation()}
        info = {"success": solved, "boxes_on_target": self._on_target}
        return [obs], reward, solved, False, info

    def _move(self, d: int) -> float:
        if d == UNDO:
            return self._undo()
        p = self._player
        q = self._nbr[d][p]
        if q < 0 or self._walls[q]:
            return STEP_REWARD
        reward = STEP_REWARD
        box_from, box_to = -1, -1
        if self._box[q]:
            k = self._nbr[d][q]
            if k < 0 or self._walls[k] or self._box[k]:
                return STEP_REWARD
            reward += self._shift_box(q, k)
            box_from, box_to = q, k
        self._place_player(q)
        if self.undo:
            self._history.append((p, box_from, box_to))
        return reward

    def _undo(self) -> float:
        """Take back the last recorded move: the player returns, a pushed box comes back."""
        if not self._history:
            return STEP_REWARD
        p, box_from, box_to = self._history.pop()
        reward = STEP_REWARD
        self._place_player(p)
        if box_from >= 0:
            reward += self._shift_box(box_to, box_from)
        return reward

    def _shift_box(self, src: int, dst: int) -> float:
        """Move a box from `src` to the free cell `dst`; the reward of its target change."""
        box, target, disp, pos = self._box, self._is_target, self._disp, self._pos
        box[src] = 0
        box[dst] = 1
        change = target[dst] - target[src]
        self._on_target += change
        disp[pos[dst]] = _BT if target[dst] else _B
        if self._player != src:
            disp[pos[src]] = self._floor_ch[src]
        return change * BOX_ON_REWARD if change > 0 else -change * BOX_OFF_REWARD

    def _place_player(self, q: int) -> None:
        disp, pos, p = self._disp, self._pos, self._player
        if not self._box[p]:
            disp[pos[p]] = self._floor_ch[p]
        disp[pos[q]] = _PT if self._is_target[q] else _P
        self._player = q

    def _expected(self) -> str:
        words = "Down, Left, Right, Undo" if self.undo else "Down, Left, Right"
        if self.actions_per_turn == 1:
            return f"one move as <answer>Up</answer> (or {words})"
        return f"1 to {self.actions_per_turn} moves as <answer>Up Left</answer> (Up, {words})"

    def _parse(self, action: object) -> list[int] | str:
        """Direction indices, or a sentence saying what was wrong."""
        if not isinstance(action, str):
            return f"the action must be a string of text, got {type(action).__name__}"
        answers = _ANSWER_RE.findall(action)
        if not answers:
            return (
                "no <answer>...</answer> found"
                if "<answer>" not in action
                else "unclosed <answer> tag"
            )
        words = [w for w in _SPLIT_RE.split(answers[-1]) if w]
        if not words:
            return "the answer is empty"
        moves = []
        for w in words:
            d = UNDO if self.undo and w.lower() == "undo" else _DIRECTION.get(w.lower())
            if d is None:
                return f"{w[:40]!r} is not a move"
            moves.append(d)
        if len(moves) > self.actions_per_turn:
            return (
                f"{len(moves)} moves given but at most {self.actions_per_turn} are allowed per turn"
            )
        return moves

    # --- views and oracles ----------------------------------------------------------------------

    def grid_text(self) -> str:
        """The current grid, one row per line (no header)."""
        if self.level is None:
            raise RuntimeError("SokobanEnv has no room yet; call reset() first")
        return self._disp.decode()

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self.grid_text()
        return None

    def state(self) -> tuple[int, tuple[int, ...]]:
        """(player cell, sorted box cells), the key the solver and the plan cache use."""
        return self._player, tuple(i for i, b in enumerate(self._box) if b)

    def solved(self) -> bool:
        return self.level is not None and self._on_target == self._n

    def summarize_for_skill(
        self, turns: list[TurnRecord], success: bool, truncated: bool
    ) -> SkillSummary | None:
        return summarize_sokoban(turns, success, truncated)

    def can_undo(self) -> bool:
        """Whether `Undo` would take something back (undo is on and a move was made)."""
        return self.undo and bool(self._history)

    def expert_action(self) -> str | None:
        """`<answer>MOVE</answer>` with the next move(s) of an optimal plan; at a dead end
        (no solution from here) `<answer>Undo</answer>` when undo is on, else None. None
        also when solved."""
        if self.level is None or self.solved():
            return None
        key = self.state()
        i = self._plan.get(key)
        if i is None:
            plan = solve_level(self.level, self.solver_time_limit_s, boxes=key[1], player=key[0])
            if not plan:
                return f"<answer>{UNDO_WORD}</answer>" if self.can_undo() else None
            self._plan_moves = [MOVES.index(m) for m in plan]
            self._plan = self._plan_states(key, self._plan_moves)
            i = 0
        moves = self._plan_moves[i : i + self.actions_per_turn]
        return "<answer>" + " ".join(MOVES[d] for d in moves) + "</answer>"

    def _plan_states(
        self, start: tuple[int, tuple[int, ...]], moves: list[int]
    ) -> dict[tuple[int, tuple[int, ...]], int]:
        """The state before each move of a plan, so a state on the plan finds its place."""
        nbr = self._nbr
        p, boxes = start
        box_set = set(boxes)
        states = {}
        for i, d in enumerate(moves):
            states.setdefault((p, tuple(sorted(box_set))), i)
            q = nbr[d][p]
            if q in box_set:
                box_set.discard(q)
                box_set.add(nbr[d][q])
            p = q
        return states

    def random_action(self) -> str:
        """A random direction (or several, up to `actions_per_turn`) in the answer format."""
        k = int(self.np_random.integers(1, self.actions_per_turn + 1))
        words = (*MOVES, UNDO_WORD) if self.undo else MOVES
        picks = self.np_random.integers(len(words), size=k)
        return "<answer>" + " ".join(words[int(d)] for d in picks) + "</answer>"


SKILL_WORKFLOW = (
    "find a box and the nearest target; walk to the cell behind the box, opposite the "
    "target, without pushing anything; push the box in straight lines onto the target; "
    "never push a box into a corner or against a wall unless that cell is a target; write "
    "exactly one move per turn as <answer>Up</answer> (Up, Down, Left or Right)."
)


def summarize_sokoban(
    turns: list[TurnRecord], success: bool, truncated: bool
) -> SkillSummary | None:
    """What a Sokoban episode teaches any room: pushes onto and off targets, format errors,
    moving back and forth. No move list: another room's moves do not transfer."""
    if not turns:
        return None
    n = len(turns)
    fmt = sum(bool(t.info.get("format_error")) for t in turns)
    start = re.search(
        r"Boxes on targets: (\d+)/", "".join(m["content"] for m in turns[0].observation)
    )
    on, off, before = 0, 0, int(start.group(1)) if start else 0
    for t in turns:
        now = int(t.info.get("boxes_on_target", before))
        on, off, before = on + max(now - before, 0), off + max(before - now, 0), now
    seen: set[str] = set()
    revisits = 0
    for t in turns:
        grid = "".join(m["content"] for m in t.observation if m["role"] == "user")
        revisits += grid in seen and bool(grid)
        seen.add(grid)
    if success:
        worked = f"solved the room in {n} turns; {on} pushes put a box on a target."
    else:
        worked = f"did not solve the room; {on} pushes put a box on a target."
    mistakes = []
    if fmt:
        mistakes.append(f"{fmt} of {n} turns were not a single valid move in <answer>")
    if off:
        mistakes.append(f"pushed a box off a target {off} times")
    if revisits:
        mistakes.append(
            f"came back to an earlier position {revisits} times (moving back and forth)"
        )
    if truncated:
        mistakes.append(f"ran out of turns after {n}")
    return SkillSummary(worked, "; ".join(mistakes) or "none seen in this episode.", SKILL_WORKFLOW)
