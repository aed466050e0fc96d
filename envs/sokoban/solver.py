"""A Sokoban solver: move-optimal A* first, then a push-level best-first search.

Phase 1 is A* over (player, boxes) states, one move per edge, with the sum of each box's
push distance to its nearest target as the heuristic. Every move changes that sum by at
most one, so it is consistent, and the plan found is optimal in moves. It is cut off after
`max_optimal_nodes` expansions (generated training rooms finish far below that).

Phase 2, for big levels, searches over pushes: a state is the boxes plus the region the
player can reach, an edge is one push. It prunes dead squares (cells from which no
box can reach a target), freeze deadlocks (a box frozen on both axes off a target),
and orders states by pushes so far plus twice the min-cost matching of boxes to targets
(push distances). Its plans are valid, not necessarily optimal.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque

from mentorgym.envs.sokoban.level import MOVES, Level, parse_level

_OPPOSITE = (1, 0, 3, 2)
_INF = 1 << 30


def solve(
    grid_text: str,
    time_limit_s: float = 10.0,
    *,
    max_optimal_nodes: int = 200_000,
) -> list[str] | None:
    """Moves (`"Up"`, `"Down"`, `"Left"`, `"Right"`) that solve the grid, or None.

    None means no solution was found within `time_limit_s` (or there is none). The plan is
    optimal in moves when the exact phase finishes within `max_optimal_nodes` expansions,
    which it does on the generated training rooms. Raises ValueError for a malformed grid.
    """
    return solve_level(parse_level(grid_text), time_limit_s, max_optimal_nodes=max_optimal_nodes)


def solve_level(
    level: Level,
    time_limit_s: float = 10.0,
    *,
    max_optimal_nodes: int = 200_000,
    boxes: tuple[int, ...] | None = None,
    player: int | None = None,
) -> list[str] | None:
    """`solve` on a parsed level, optionally from other box/player positions."""
    deadline = time.perf_counter() + time_limit_s
    s = _Search(level)
    boxes = tuple(sorted(level.boxes if boxes is None else boxes))
    player = level.player if player is None else player
    if set(boxes) == s.target_set:
        return []
    if any(s.dead[b] and b not in s.target_set for b in boxes):
        return None
    # the exact phase may use a fifth of the time: past that the push search is the better bet
    cutoff = time.perf_counter() + time_limit_s / 5
    plan = s.astar_moves(player, boxes, max_optimal_nodes, cutoff)
    if plan is not None:
        return [MOVES[d] for d in plan] if plan != [-1] else None
    plan = s.push_search(player, boxes, deadline)
    return None if plan is None else [MOVES[d] for d in plan]


class _Search:
    def __init__(self, level: Level):
        self.level = level
        self.nbr = level.neighbors
        self.walls = level.walls
        self.targets = level.targets
        self.target_set = frozenset(level.targets)
        n = level.width * level.height
        # dist[t][i]: pushes needed to bring a box from i to target t, other boxes ignored
        self.dist = [self._pull_distances(t, n) for t in level.targets]
        self.min_dist = [min(d[i] for d in self.dist) for i in range(n)]
        self.dead = bytearray(1 if self.min_dist[i] >= _INF else 0 for i in range(n))
        self._h_cache: dict[tuple[int, ...], int] = {}

    def _free(self, i: int) -> bool:
        return i >= 0 and not self.walls[i]

    def _pull_distances(self, target: int, n: int) -> list[int]:
        nbr = self.nbr
        dist = [_INF] * n
        dist[target] = 0
        queue = deque([target])
        while queue:
            y = queue.popleft()
            for d in range(4):
                # a push in direction d ends at y from x = y - d, with the player at x - d
                x = nbr[_OPPOSITE[d]][y]
                if x < 0 or self.walls[x] or dist[x] < _INF:
                    continue
                behind = nbr[_OPPOSITE[d]][x]
                if behind < 0 or self.walls[behind]:
                    continue
                dist[x] = dist[y] + 1
                queue.append(x)
        return dist

    # --- phase 1: move-optimal A* ---------------------------------------------------------

    def astar_moves(
        self, player: int, boxes: tuple[int, ...], max_nodes: int, deadline: float
    ) -> list[int] | None:
        """Optimal move list; [-1] when proven unsolvable; None when cut off."""
        nbr, walls, dead, md = self.nbr, self.walls, self.dead, self.min_dist
        targets = self.target_set
        start = (player, boxes)
        parent: dict[tuple[int, tuple[int, ...]], tuple[tuple[int, tuple[int, ...]], int] | None]
        parent = {start: None}
        best_g = {start: 0}
        counter = itertools.count()
        h0 = sum(md[b] for b in boxes)
        heap = [(h0, 0, next(counter), start, h0)]
        expanded = 0
        while heap:
            _f, neg_g, _c, state, h = heapq.heappop(heap)
            g = -neg_g
            if best_g.get(state, _INF) < g:
                continue
            p, bx = state
            if h == 0 and set(bx) == targets:
                return self._moves_from(parent, state)
            expanded += 1
            if expanded > max_nodes or (expanded & 1023 == 0 and time.perf_counter() > deadline):
                return None
            for d in range(4):
                q = nbr[d][p]
                if q < 0 or walls[q]:
                    continue
                if q in bx:
                    k = nbr[d][q]
                    if k < 0 or walls[k] or dead[k] or k in bx:
                        continue
                    nb = tuple(sorted(k if b == q else b for b in bx))
                    nh = h - md[q] + md[k]
                else:
                    nb, nh = bx, h
                child = (q, nb)
                if best_g.get(child, _INF) <= g + 1:
                    continue
                best_g[child] = g + 1
                parent[child] = (state, d)
                # ties broken toward deeper states: they are closer to a goal
                heapq.heappush(heap, (g + 1 + nh, -(g + 1), next(counter), child, nh))
        return [-1]

    @staticmethod
    def _moves_from(parent: dict, state: tuple) -> list[int]:
        moves: list[int] = []
        link = parent[state]
        while link is not None:
            state, d = link
            moves.append(d)
            link = parent[state]
        moves.reverse()
        return moves

    # --- phase 2: push-level best-first search ---------------------------------------------

    def _reach(self, player: int, box_set: set[int] | frozenset[int]) -> list[int]:
        nbr, walls = self.nbr, self.walls
        seen = {player}
        stack = [player]
        while stack:
            x = stack.pop()
            for d in range(4):
                y = nbr[d][x]
                if y >= 0 and not walls[y] and y not in seen and y not in box_set:
                    seen.add(y)
                    stack.append(y)
        return list(seen)

    def _matching(self, boxes: tuple[int, ...]) -> int:
        """Min-cost assignment of boxes to targets by push distance (exact up to 6 boxes)."""
        h = self._h_cache.get(boxes)
        if h is not None:
            return h
        dist = self.dist
        n = len(boxes)
        if n <= 6:
            h = _INF
            for perm in itertools.permutations(range(n)):
                cost = 0
                for bi, ti in enumerate(perm):
                    cost += dist[ti][boxes[bi]]
                    if cost >= h:
                        break
                else:
                    h = cost
        else:
            free_t = set(range(n))
            h = 0
            for b in sorted(boxes, key=lambda b: self.min_dist[b]):
                ti = min(free_t, key=lambda t: dist[t][b])
                free_t.discard(ti)
                h += dist[ti][b]
        self._h_cache[boxes] = h
        return h

    def _frozen(self, b: int, box_set: set[int], seen: set[int]) -> bool:
        """Is the box at b frozen on both axes? Boxes already visited count as walls."""
        nbr, walls, dead = self.nbr, self.walls, self.dead
        seen.add(b)
        for d1, d2 in ((0, 1), (2, 3)):
            a, c = nbr[d1][b], nbr[d2][b]
            wa = a < 0 or walls[a] or a in seen
            wc = c < 0 or walls[c] or c in seen
            if wa or wc or (dead[a] and dead[c]):
                continue
            if a in box_set and self._frozen(a, box_set, seen):
                continue
            if c in box_set and self._frozen(c, box_set, seen):
                continue
            return False
        return True

    def _freeze_deadlock(self, b: int, box_set: set[int]) -> bool:
        seen: set[int] = set()
        if not self._frozen(b, box_set, seen):
            return False
        return any(x not in self.target_set for x in seen if x in box_set)

    def push_search(self, player: int, boxes: tuple[int, ...], deadline: float) -> list[int] | None:
        nbr, walls, dead = self.nbr, self.walls, self.dead
        targets = self.target_set
        counter = itertools.count()
        # parent[(norm, boxes)] = (parent key, box cell pushed, direction) or None
        parent: dict[
            tuple[int, tuple[int, ...]], tuple[tuple[int, tuple[int, ...]], int, int] | None
        ]
        parent = {}
        heap = [(self._matching(boxes), 0, next(counter), player, boxes, None)]
        expanded = 0
        while heap:
            _f, g, _c, p, bx, link = heapq.heappop(heap)
            box_set = set(bx)
            reach = self._reach(p, box_set)
            key = (min(reach), bx)
            if key in parent:
                continue
            parent[key] = link
            if box_set == targets:
                return self._replay(parent, key, player, boxes)
            expanded += 1
            if expanded & 255 == 0 and time.perf_counter() > deadline:
                return None
            reach_set = set(reach)
            for b in bx:
                for d in range(4):
                    dest = nbr[d][b]
                    if dest < 0 or walls[dest] or dead[dest] or dest in box_set:
                        continue
                    if nbr[_OPPOSITE[d]][b] not in reach_set:
                        continue
                    box_set.discard(b)
                    box_set.add(dest)
                    blocked = self._freeze_deadlock(dest, box_set)
                    nb = tuple(sorted(box_set))
                    box_set.discard(dest)
                    box_set.add(b)
                    if blocked:
                        continue
                    h = self._matching(nb)
                    heapq.heappush(heap, (g + 1 + 2 * h, g + 1, next(counter), b, nb, (key, b, d)))
        return None

    def _replay(self, parent: dict, key: tuple, player: int, boxes: tuple[int, ...]) -> list[int]:
        pushes: list[tuple[int, int]] = []
        link = parent[key]
        while link is not None:
            key, b, d = link
            pushes.append((b, d))
            link = parent[key]
        pushes.reverse()
        moves: list[int] = []
        box_set = set(boxes)
        p = player
        for b, d in pushes:
            moves += self._walk(p, self.nbr[_OPPOSITE[d]][b], box_set)
            moves.append(d)
            box_set.discard(b)
            box_set.add(self.nbr[d][b])
            p = b
        return moves

    def _walk(self, src: int, dst: int, box_set: set[int]) -> list[int]:
        """Shortest player path (as directions) from src to dst around boxes and walls."""
        if src == dst:
            return []
        nbr, walls = self.nbr, self.walls
        prev: dict[int, tuple[int, int]] = {src: (-1, -1)}
        queue = deque([src])
        while queue:
            x = queue.popleft()
            for d in range(4):
                y = nbr[d][x]
                if y < 0 or walls[y] or y in box_set or y in prev:
                    continue
                prev[y] = (x, d)
                if y == dst:
                    path: list[int] = []
                    while y != src:
                        y, dd = prev[y]
                        path.append(dd)
                    path.reverse()
                    return path
                queue.append(y)
        raise AssertionError("push search produced an unreachable push; this is a solver bug")
