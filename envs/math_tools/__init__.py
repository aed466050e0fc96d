"""Math with tools (`mentorgym/MathTools-v0`): math problems, a python tool, checked answers.

- `MathToolsEnv`: the env (generated problems, or a data set: GSM8K, MATH, AIME, SVAMP, ...).
- `generate_problem`, `load_problems`, `load_gsm8k`, `Problem`: where problems come from.
- `check_answer`, `answers_match`, `Verdict`, `extract_number`: the answer checker.
"""

from mentorgym.envs.math_tools.answers import (
    Verdict,
    answers_match,
    check_answer,
    extract_number,
    last_boxed,
)
from mentorgym.envs.math_tools.datasets import load_gsm8k, load_problems
from mentorgym.envs.math_tools.env import MathToolsEnv
from mentorgym.envs.math_tools.problems import Problem, generate_problem

__all__ = [
    "MathToolsEnv",
    "Problem",
    "Verdict",
    "answers_match",
    "check_answer",
    "extract_number",
    "generate_problem",
    "last_boxed",
    "load_gsm8k",
    "load_problems",
]
