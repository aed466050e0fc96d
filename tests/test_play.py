"""`mentorgym play`: the board and its key help fit an 80-column terminal, uncut."""

from __future__ import annotations

from rich.console import Console

from mentorgym.envs.registry import make
from mentorgym.play import KEY_HELP, TYPE_HELP, board


def test_board_and_key_help_fit_80_columns_uncut():
    env = make("mentorgym/Sokoban-v0")
    env.reset(seed=3)
    for help_line in (KEY_HELP, TYPE_HELP):
        console = Console(width=80, record=True, color_system=None)
        console.print(
            board(
                env.unwrapped.grid_text(), "mentorgym/Sokoban-v0  turn 12  reward -1.2", help_line
            )
        )
        lines = console.export_text().splitlines()
        assert max(len(line) for line in lines) <= 80
        assert help_line in lines, "the help shows whole, on a line of its own"
    env.close()
