"""A third-party env in one short file: reverse a word (single turn, with an oracle)."""

from __future__ import annotations

from typing import Any

import gymnasium

from mentorgym.envs.base import TextEnv, parse_action, system, user

WORDS = ["gymnasium", "teacher", "student", "sokoban", "mentor", "policy", "rollout", "sandbox"]


class ReverseWordEnv(TextEnv):
    """Reverse a word, letter by letter (a toy plugin env)."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.word = WORDS[int(self.np_random.integers(len(WORDS)))]
        prompt = "Reverse the word you are given. Reply with <answer>REVERSED</answer>."
        return [system(prompt), user(self.word)], {"task_id": self.word}

    def step(self, action: str):
        parsed = parse_action(action)
        if parsed.error or parsed.answer is None:
            return self.format_error(parsed.error or "no <answer> tag")
        ok = parsed.answer == self.word[::-1]
        return [], float(ok), True, False, {"success": ok}

    def expert_action(self) -> str:
        return f"<answer>{self.word[::-1]}</answer>"

    def random_action(self) -> str:
        letters = list(self.word)
        self.np_random.shuffle(letters)
        return f"<answer>{''.join(letters)}</answer>"


def register() -> None:
    """The `mentorgym.envs` entry point: register ids the Gymnasium way."""
    gymnasium.register(id="toy/ReverseWord-v0", entry_point=ReverseWordEnv, max_episode_steps=3)
