"""MathTools-v0: problems, the answer checker, the python tool, malformed turns, the oracle."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from mentorgym.envs.base import format_tool_call
from mentorgym.envs.math_tools import (
    MathToolsEnv,
    answers_match,
    extract_number,
    generate_problem,
    load_gsm8k,
)
from mentorgym.envs.registry import register_builtin
from mentorgym.errors import ConfigError
from mentorgym.sandboxes.base import ExecResult
from mentorgym.sandboxes.local import LocalSandbox

GSM8K = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"
ENV_ID = "mentorgym/MathTools-v0"


def call(code: object) -> str:
    return format_tool_call("python", {"code": code})


class FakeSandbox:
    """Answers every command with a fixed result and records what it saw."""

    def __init__(self, result: ExecResult):
        self.result = result
        self.commands: list[str] = []
        self.closed = 0

    def exec(self, cmd: str, timeout: float = 30.0) -> ExecResult:
        self.commands.append(cmd)
        return self.result

    def read_file(self, path: str) -> bytes:
        raise FileNotFoundError(path)

    def write_file(self, path: str, content: str | bytes) -> None:
        raise OSError("read-only")

    def close(self) -> None:
        self.closed += 1

    def __enter__(self) -> FakeSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the answer checker -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1,000", 1000.0),
        ("1000.0", 1000.0),
        ("$1000", 1000.0),
        ("$1,234.50", 1234.5),
        ("3/4", 0.75),
        ("0.75", 0.75),
        (".5", 0.5),
        ("\\boxed{42}", 42.0),
        ("\\boxed{\\frac{3}{4}}", 0.75),
        ("so the total is \\boxed{1,000} dollars", 1000.0),
        ("50%", 50.0),
        ("-7", -7.0),
        ("\u22127", -7.0),
        ("The answer is 18.", 18.0),
        ("18 apples", 18.0),
        ("no number", None),
        ("", None),
        ("1/0", None),
        (None, None),
        (12, None),
    ],
)
def test_extract_number(text: object, value: float | None) -> None:
    assert extract_number(text) == value


@pytest.mark.parametrize(
    ("given", "expected", "ok"),
    [
        ("1,000", "1000", True),
        ("$1000.00", "1,000", True),
        ("1000", "$1,000", True),
        ("3/4", "0.75", True),
        ("0.75", "3/4", True),
        ("\\boxed{\\dfrac{3}{4}}", "3/4", True),
        ("50%", "50", True),
        ("50%", "0.5", True),
        ("0.5", "50%", True),
        ("0.30000000000000004", "0.3", True),
        ("1000000.4", "1000000", True),  # within 1e-6 relative
        ("1000.5", "1000", False),
        ("999", "1000", False),
        ("0.76", "3/4", False),
        ("", "5", False),
        ("five", "5", False),
        ("Paris", "paris", True),  # no number expected: text comparison
    ],
)
def test_answers_match(given: str, expected: str, ok: bool) -> None:
    assert answers_match(given, expected) is ok


# --- problems -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "knobs",
    [
        {},
        {"steps": 1, "max_value": 4},
        {"steps": 5, "max_value": 100, "fractions": True, "percentages": True},
        {"steps": 3, "fractions": True},
        {"steps": 3, "percentages": True},
    ],
)
def test_generated_programs_print_their_answer(knobs: dict) -> None:
    import contextlib
    import io

    for seed in range(200):
        p = generate_problem(seed, **knobs)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(p.program, {})  # noqa: S102 - our own generated program
        assert out.getvalue().strip() == p.answer
        assert int(p.answer) > 0
        # The worked steps reach the same number.
        assert (
            p.solution.splitlines()[-1].endswith(f"= {p.answer}")
            or p.solution == f"Start: {p.answer}"
        )


def test_difficulty_knobs_change_the_problems() -> None:
    easy = [generate_problem(s) for s in range(100)]
    hard = [
        generate_problem(s, steps=4, max_value=100, percentages=True, fractions=True)
        for s in range(100)
    ]
    assert all(
        p.program.count("\n") == 3 for p in easy if "//" not in p.program
    )  # start, 2 ops, print
    assert sum(len(p.question) for p in hard) > 1.3 * sum(len(p.question) for p in easy)
    assert any("%" in p.question for p in hard) and not any("%" in p.question for p in easy)
    assert any("/" in p.question for p in hard) and not any("/" in p.question for p in easy)
    themes = {p.question.split()[1] for p in easy}
    assert len(themes) >= 3  # several story templates


def test_bad_knobs_and_bad_files_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="steps"):
        MathToolsEnv(steps=0)
    with pytest.raises(ConfigError, match="not found"):
        MathToolsEnv(dataset=str(tmp_path / "nope.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    with pytest.raises(ConfigError, match="####"):
        load_gsm8k(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ConfigError, match="bad.jsonl:1"):
        load_gsm8k(bad)


# --- the env through gymnasium -------------------------------------------------------------------


def make(**kwargs) -> gymnasium.Env:
    register_builtin()
    return gymnasium.make(ENV_ID, **kwargs)


def run_episode(env: gymnasium.Env, seed: int, pick) -> tuple[float, bool, int]:
    env.reset(seed=seed)
    total, turns = 0.0, 0
    while True:
        _, r, term, trunc, info = env.step(pick(env.unwrapped))
        total += r
        turns += 1
        if term or trunc:
            return total, info["success"], turns


def test_expert_solves_every_generated_problem() -> None:
    env = make()
    results = [run_episode(env, seed, lambda u: u.expert_action()) for seed in range(50)]
    env.close()
    assert all(r == 1.0 and ok and turns == 2 for r, ok, turns in results)


def test_random_baseline_is_far_below() -> None:
    env = make()
    results = [run_episode(env, seed, lambda u: u.random_action()) for seed in range(100)]
    env.close()
    assert sum(ok for _, ok, _ in results) <= 10


def test_seed_determines_the_problem_and_index_is_seed() -> None:
    env = make()
    a, ia = env.reset(seed=7)
    b, ib = env.reset(seed=7)
    c, _ = env.reset(seed=8)
    assert a == b and ia == ib and a != c
    d, info = env.reset(options={"index": 123})
    assert d[1]["content"] == generate_problem(123).question
    assert info["task_id"] == generate_problem(123).task_id
    assert env.unwrapped.num_tasks is None
    env.close()


def test_check_env() -> None:
    env = make()
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_gsm8k_dataset() -> None:
    env = make(dataset=str(GSM8K))
    u = env.unwrapped
    assert u.num_tasks == 6
    obs, info = env.reset(options={"index": 1})
    assert "850 houses" in obs[-1]["content"] and info["task_id"] == "gsm8k_sample-1"
    assert u.expert_action() == "<answer>620,500</answer>"  # no program: the gold answer
    assert "620500" in u.reference_solution()
    _, r, term, _, info = env.step("<answer>$620,500</answer>")
    assert (r, term, info["success"]) == (1.0, True, True)

    env.reset(options={"index": 2})  # answer 3/4
    _, r, _, _, info = env.step("It is \\boxed{0.75}. <answer>0.75</answer>")
    assert r == 1.0 and info["success"]
    env.reset(options={"index": 2})
    _, r, term, _, info = env.step("<answer>9/12 + 1</answer>")
    assert (r, term, info["success"]) == (0.0, True, False)

    obs, info = env.reset(options={"index": 5})
    assert info["task_id"] == "tank-leak"
    assert env.step("<answer>8.50</answer>")[1] == 1.0
    env.reset(options={"index": 5})
    assert env.step("<answer>8</answer>")[1] == 0.0

    seen = {env.reset(seed=s)[1]["task_id"] for s in range(40)}
    assert len(seen) >= 4  # a seed picks one at random
    with pytest.raises(ConfigError, match="out of range"):
        env.reset(options={"index": 6})
    env.close()


def test_python_tool_runs_code_and_returns_errors_as_observations() -> None:
    env = make()
    env.reset(seed=0)
    msgs, r, term, trunc, info = env.step(call("print(6 * 7)"))
    assert msgs == [{"role": "tool", "content": "42\n"}] and not (term or trunc) and r == 0.0
    assert "format_error" not in info and info["success"] is False
    msgs, *_, info = env.step(call("1 / 0"))
    assert "ZeroDivisionError" in msgs[0]["content"] and "format_error" not in info
    msgs, *_ = env.step(call("x = 5"))
    assert "no output" in msgs[0]["content"]
    msgs, *_ = env.step(call("print('quote\\'s \"fine\"')"))
    assert msgs[0]["content"] == 'quote\'s "fine"\n'
    env.close()


def test_python_tool_timeout_is_an_observation() -> None:
    env = make(tool_timeout=0.5)
    env.reset(seed=0)
    msgs, _, term, _, info = env.step(
        call("import time\nprint('partial', flush=True)\ntime.sleep(30)")
    )
    content = msgs[0]["content"]
    assert "partial" in content and "timed out after 0.5 s" in content and not term
    env.close()


def test_python_tool_memory_and_output_limits() -> None:
    env = make(sandbox_factory=lambda: LocalSandbox(memory_mb=256, output_limit=1_000))
    env.reset(seed=0)
    msgs, *_ = env.step(call("x = bytearray(1024 ** 3)"))
    assert "MemoryError" in msgs[0]["content"]
    msgs, *_ = env.step(call("print('z' * 10_000)"))
    assert "output truncated" in msgs[0]["content"] and len(msgs[0]["content"]) < 1_100
    msgs, *_ = env.step(call("import sys; sys.stdout.buffer.write(b'ok\\xff\\n')"))
    assert msgs[0]["content"] == "ok\ufffd\n"
    env.close()


def test_one_sandbox_per_episode_closed_at_reset_and_close() -> None:
    made: list[FakeSandbox] = []

    def factory() -> FakeSandbox:
        made.append(FakeSandbox(ExecResult(0, "7\n")))
        return made[-1]

    env = make(sandbox_factory=factory)
    env.reset(seed=1)
    assert made == []  # made lazily, at the first tool call
    env.step(call("print(7)"))
    env.step(call("print(7)"))
    assert len(made) == 1 and made[0].commands[0].startswith("python3 -c ")
    env.reset(seed=2)
    assert made[0].closed == 1
    env.step(call("print(7)"))
    env.close()
    env.close()
    assert len(made) == 2 and made[1].closed == 1


def test_tool_call_limit_then_answer_still_counts() -> None:
    env = make(max_tool_calls=2, sandbox_factory=lambda: FakeSandbox(ExecResult(0, "1\n")))
    env.reset(seed=3)
    answer = env.unwrapped.problem.answer
    for _ in range(2):
        assert "format_error" not in env.step(call("print(1)"))[4]
    msgs, r, term, _, info = env.step(call("print(1)"))
    assert info["format_error"] and not term and r == 0.0
    assert "limit of 2 tool calls" in msgs[-1]["content"] and "<answer>" in msgs[-1]["content"]
    assert env.unwrapped.expert_action() == f"<answer>{answer}</answer>"
    _, r, term, _, info = env.step(f"<answer>{answer}</answer>")
    assert (r, term, info["success"]) == (1.0, True, True)
    # Two calls in one turn with one call of room left: the first runs, the second is refused.
    env.reset(seed=3)
    env.step(call("print(1)"))
    msgs, *_, info = env.step(call("print(1)") + call("print(2)"))
    assert [m["content"] for m in msgs][0] == "1\n" and "1 call(s) were not run" in msgs[1][
        "content"
    ]
    assert info["format_error"] and info["tool_calls"] == 2
    env.close()


@pytest.mark.parametrize(
    ("action", "needle"),
    [
        ("I think it is about twelve.", "neither a tool call nor an answer"),
        ("", "neither a tool call nor an answer"),
        (
            '<tool_call>{"name": "python", "arguments": {"code": "print(1)"</tool_call>',
            "not valid JSON",
        ),
        ('<tool_call>{"name": "python", "arguments": {"code": "print(1)"}}', "unbalanced"),
        ("<answer>12", "unclosed <answer>"),
        (format_tool_call("calculator", {"expr": "1+1"}), 'unknown tool "calculator"'),
        (format_tool_call("python", {"source": "print(1)"}), "missing required argument"),
        (format_tool_call("python", {"code": 12}), "must be a string"),
        ('<tool_call>{"arguments": {}}</tool_call>', 'needs a string "name"'),
        (None, "must be a string of text"),
        (12, "must be a string of text"),
    ],
)
def test_malformed_turns_never_raise(action: object, needle: str) -> None:
    env = make(sandbox_factory=lambda: FakeSandbox(ExecResult(0, "1\n")))
    env.reset(seed=0)
    msgs, r, term, trunc, info = env.unwrapped.step(action)  # the raw env: no checker wrappers
    assert info["format_error"] is True and info["success"] is False
    assert r == 0.0 and not term and not trunc
    text = msgs[-1]["content"]
    assert needle in text
    assert "<answer>" in text  # every error says what to write instead
    # The episode goes on and can still be won.
    _, r, term, _, _ = env.unwrapped.step(f"<answer>{env.unwrapped.problem.answer}</answer>")
    assert r == 1.0 and term
    env.close()


def test_turn_limit_truncates_without_success() -> None:
    env = make(sandbox_factory=lambda: FakeSandbox(ExecResult(0, "1\n")))
    env.reset(seed=0)
    for _ in range(8):
        _, _, term, trunc, info = env.step("thinking")
    assert trunc and not term and info["success"] is False
    env.close()


def test_reference_solution_and_step_before_reset() -> None:
    env = MathToolsEnv()
    assert env.reference_solution() is None and env.expert_action() is None
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.step("<answer>1</answer>")
    env.reset(seed=4)
    ref = env.reference_solution()
    assert env.problem.program in ref and ref.endswith(f"Answer: {env.problem.answer}")
    env.close()


# --- how the answer is read: <answer> tags or the last \boxed{} -----------------------------------

MATH = Path(__file__).parent / "data" / "math_sample.jsonl"


def test_boxed_answer_format_reads_the_last_boxed_of_a_turn_without_tool_calls() -> None:
    pytest.importorskip("math_verify", reason="the grader needs math-verify")
    env = make(
        dataset=str(MATH),
        answer_format="boxed",
        sandbox_factory=lambda: FakeSandbox(ExecResult(0, "1\n")),
    )
    prompt = env.unwrapped.system_prompt
    assert "\\boxed{}" in prompt and "\\boxed{YOUR ANSWER} in a turn without tool calls" in prompt
    assert "<answer>" not in prompt
    env.reset(options={"index": 0})  # gold 3\sqrt{13}
    # A turn with a tool call is not final, even with a \boxed{} in it.
    msgs, r, term, _, info = env.step(call("print(1)") + " maybe \\boxed{1}")
    assert msgs[0]["content"] == "1\n" and not term and r == 0.0
    # <answer> tags mean nothing here, closed or not.
    for text in ("<answer>3\\sqrt{13}</answer>", "<answer>3\\sqrt{13}"):
        msgs, r, term, _, info = env.step(text)
        assert (
            info["format_error"]
            and not term
            and "neither a tool call nor an answer" in (msgs[-1]["content"])
        )
        assert "\\boxed{YOUR ANSWER}" in msgs[-1]["content"]
    msgs, r, term, _, info = env.step("so it is \\boxed{3\\sqrt{13}")
    assert info["format_error"] and not term and "not closed" in msgs[-1]["content"]
    _, r, term, _, info = env.step("First \\boxed{1}; finally $\\boxed{\\sqrt{117}}$.")
    assert (r, term, info["success"], info["answer"], info["grade"]) == (
        1.0,
        True,
        True,
        "\\sqrt{117}",
        "symbolic",
    )
    env.reset(options={"index": 2})
    assert env.unwrapped.expert_action().startswith("The final answer is \\boxed{\\left( 3,")
    assert "\\boxed{" in env.unwrapped.random_action()
    env.close()


def test_boxed_answer_format_on_generated_problems_and_prompts_say_which() -> None:
    env = make(answer_format="boxed", sandbox_factory=LocalSandbox)
    assert "\\boxed{NUMBER}" in env.unwrapped.system_prompt
    results = [run_episode(env, seed, lambda u: u.expert_action()) for seed in range(5)]
    assert all(r == 1.0 and ok and turns == 2 for r, ok, turns in results)
    env.close()
    tagged = MathToolsEnv(dataset=str(MATH), sandbox_factory=LocalSandbox)
    assert "<answer>ANSWER</answer>" in tagged.system_prompt and "\\boxed" not in (
        tagged.system_prompt
    )
    assert "<answer>NUMBER</answer>" in MathToolsEnv(sandbox_factory=LocalSandbox).system_prompt
    with pytest.raises(ConfigError, match="answer_format must be one of tag, boxed"):
        MathToolsEnv(answer_format="latex")


def test_expert_labels_the_retry_after_a_wrong_call() -> None:
    env = make(max_tool_calls=3, sandbox="local", python_cmd="python3 -S")
    env.reset(seed=5)
    u = env.unwrapped
    program_call = call(u.problem.program)
    assert u.expert_action() == program_call
    env.step(call("print(1 + 1)"))  # a wrong computation: the expert retries the program
    if u.problem.answer != "2":
        assert u.expert_action() == program_call
    env.step(call("print(undefined)"))  # a failed call: still the retry
    assert u.expert_action() == program_call
    env.step(u.expert_action())  # the program prints the answer: now the answer
    assert u.expert_action() == f"<answer>{u.problem.answer}</answer>"
    _, r, term, _, info = env.step(u.expert_action())
    assert (r, term, info["success"]) == (1.0, True, True)
    env.reset(seed=5)
    for _ in range(3):
        env.step(call("print(1 + 1)"))
    assert u.expert_action() == f"<answer>{u.problem.answer}</answer>"  # no calls left
    env.close()
