"""Math with tools (`mentorgym/MathTools-v0`): word problems, a python tool, numeric answers.

- `MathToolsEnv`: the env (generated problems or a GSM8K-format JSONL file).
- `generate_problem`, `load_gsm8k`, `Problem`: where problems come from.
- `answers_match`, `extract_number`: the answer checker.
"""

from mentorgym.envs.math_tools.answers import answers_match, extract_number
from mentorgym.envs.math_tools.env import MathToolsEnv
from mentorgym.envs.math_tools.problems import Problem, generate_problem, load_gsm8k

__all__ = [
    "MathToolsEnv",
    "Problem",
    "answers_match",
    "extract_number",
    "generate_problem",
    "load_gsm8k",
]
