"""Sokoban: seeded solvable rooms, Boxoban-format level files, and an optimal solver."""

from mentorgym.envs.sokoban.env import SokobanEnv, system_prompt
from mentorgym.envs.sokoban.level import (
    MOVES,
    Level,
    format_levels,
    generate_room,
    load_levels,
    parse_level,
    parse_levels,
    play_moves,
)
from mentorgym.envs.sokoban.solver import solve, solve_level

__all__ = [
    "MOVES",
    "Level",
    "SokobanEnv",
    "format_levels",
    "generate_room",
    "load_levels",
    "parse_level",
    "parse_levels",
    "play_moves",
    "solve",
    "solve_level",
    "system_prompt",
]
