"""The Sokoban solver as a token-level teacher: `teacher: expert` for OPD and SOD.

A scripted expert knows the best move but has no logits. This teacher turns it into a
distribution over the valid action strings of the current state, then into per-token
logprobs of any completion in the student's tokenizer, so the distillation losses can
score the student's own sampled ids against it.

The distribution over action strings `a` (each `<answer>MOVE</answer>`, tokenized with the
student's tokenizer and closed by its end-of-turn id):
- `best` = every move that starts an optimal solution from the position (each successor
  solved by the move-optimal solver; ties all count), or `Undo` at a dead end when the
  env allows it (its system prompt says so); at a dead end without undo, every move.
- p(a) = (1 - eps) / |best| for a in best, eps / |others| for the other valid strings.

Per token, with P(s) = the mass of the strings whose ids start with prefix s:
    q(t | s) = (1 - delta) * P(s + t) / P(s) + delta / V      where P(s) > 0
    q(t | s) = 1 / V                                          where P(s) = 0 (off the strings)
a proper distribution over the V ids at every position (`delta` keeps every logprob
finite). Summed over a string's ids with delta = 0 it gives log p(a) exactly.

The state is read from the conversation alone: the last `Boxes on targets:` observation
is the whole position (the grid), and the system prompt says whether `Undo` is a move.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from mentorgym.agents.base import Action, BatchedPolicy, Scores
from mentorgym.agents.chat import end_of_turn_id, text_ids
from mentorgym.envs.base import Message
from mentorgym.envs.sokoban.level import MOVES, Level, parse_level
from mentorgym.envs.sokoban.solver import solve_level

HEADER = "Boxes on targets:"
UNDO = "Undo"


def sokoban_position(messages: list[Message]) -> tuple[Level, bool]:
    """(the current position, whether Undo is a move) from a Sokoban conversation."""
    undo = any(m["role"] == "system" and "<answer>Undo</answer>" in m["content"] for m in messages)
    for m in reversed(messages):
        if m["role"] == "user" and m["content"].startswith(HEADER):
            return parse_level(m["content"].split("\n", 1)[1]), undo
    raise ValueError("no Sokoban observation (`Boxes on targets:` and a grid) in the messages")


def _step(level: Level, player: int, boxes: frozenset[int], d: int) -> tuple[int, frozenset[int]]:
    """The position after move d (unchanged when a wall or two boxes block it)."""
    q = level.neighbors[d][player]
    if q < 0 or level.walls[q]:
        return player, boxes
    if q in boxes:
        k = level.neighbors[d][q]
        if k < 0 or level.walls[k] or k in boxes:
            return player, boxes
        return q, (boxes - {q}) | {k}
    return q, boxes


@lru_cache(maxsize=65536)
def best_moves(grid: str, undo: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(valid move words, the best ones) of a grid: the first moves of optimal solutions;
    `Undo` at a dead end when undo is allowed, every move at a dead end without it."""
    level = parse_level(grid)
    valid = (*MOVES, UNDO) if undo else MOVES
    boxes = frozenset(level.boxes)
    if boxes == frozenset(level.targets):
        return valid, valid
    lengths: dict[str, float] = {}
    for d, word in enumerate(MOVES):
        p, bx = _step(level, level.player, boxes, d)
        if (p, bx) == (level.player, boxes):
            continue  # a bump changes nothing: never part of an optimal solution
        plan = solve_level(level, 10.0, boxes=tuple(sorted(bx)), player=p)
        lengths[word] = math.inf if plan is None else len(plan)
    shortest = min(lengths.values(), default=math.inf)
    if shortest == math.inf:
        return valid, ((UNDO,) if undo else valid)
    return valid, tuple(w for w, n in lengths.items() if n == shortest)


class ExpertTeacher(BatchedPolicy):
    """The solver as a teacher that scores tokens (see the module docstring for the formula).

    `tokenizer`: the student's (the ids scored are the student's sampled ids). `eps`: the
    mass on valid strings that are not best; `delta`: the mass spread over the whole
    vocabulary at every position. `act` plays a best move, so it is also a Policy."""

    name = "expert-teacher"

    def __init__(self, tokenizer: Any, eps: float = 0.01, delta: float = 1e-4):
        if not (0.0 <= eps < 1.0 and 0.0 <= delta < 1.0):
            raise ValueError(f"eps and delta must be in [0, 1), got {eps}, {delta}")
        self.tok = tokenizer
        self.eps, self.delta = eps, delta
        self.vocab = len(tokenizer)
        self._ids: dict[str, tuple[int, ...]] = {}

    def action_ids(self, word: str) -> tuple[int, ...]:
        """The student's ids of the turn `<answer>WORD</answer>`, closed by end-of-turn."""
        if word not in self._ids:
            text = f"<answer>{word}</answer>"
            self._ids[word] = (*text_ids(self.tok, text), end_of_turn_id(self.tok))
        return self._ids[word]

    def distribution(self, messages: list[Message]) -> dict[tuple[int, ...], float]:
        """p over the valid action strings (as id tuples) of the conversation's position."""
        level, undo = sokoban_position(messages)
        valid, best = best_moves(level.to_text(), undo)
        others = [w for w in valid if w not in best]
        p = {self.action_ids(w): (1.0 - (self.eps if others else 0.0)) / len(best) for w in best}
        for w in others:
            p[self.action_ids(w)] = self.eps / len(others)
        return p

    def score(
        self, messages: list[Message], completion_token_ids: list[int], top_k: int = 0
    ) -> Scores:
        """log q(id_t | ids_<t) for each completion id (`top_k` is not offered: 0 only)."""
        if top_k:
            raise ValueError("the expert teacher gives logprobs of given ids only; use top_k=0")
        dist = self.distribution(messages)
        out: list[float] = []
        prefix: tuple[int, ...] = ()
        for t in completion_token_ids:
            mass = sum(p for ids, p in dist.items() if ids[: len(prefix)] == prefix)
            if mass <= 0.0:
                out.append(-math.log(self.vocab))
            else:
                nxt = prefix + (t,)
                hit = sum(p for ids, p in dist.items() if ids[: len(nxt)] == nxt)
                out.append(math.log((1.0 - self.delta) * hit / mass + self.delta / self.vocab))
            prefix += (t,)
        return Scores(out)

    def act(self, messages: list[Message]) -> Action:
        level, undo = sokoban_position(messages)
        _, best = best_moves(level.to_text(), undo)
        ids = self.action_ids(best[0])
        return Action(f"<answer>{best[0]}</answer>", token_ids=list(ids))
