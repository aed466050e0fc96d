"""`mentorgym/MathTools-v0`: math problems (generated, or GSM8K, MATH, AIME...) with a python tool."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

import numpy as np

from mentorgym.envs.base import (
    ANSWER_FORMAT,
    Message,
    SkillSummary,
    StepResult,
    TextEnv,
    Tool,
    TurnRecord,
    format_tool_call,
    parse_action,
    run_tool_calls,
    system,
    tool,
    tools_prompt,
    user,
)
from mentorgym.envs.math_tools.answers import check_answer, last_boxed
from mentorgym.envs.math_tools.datasets import load_problems
from mentorgym.envs.math_tools.problems import Problem, generate_problem
from mentorgym.errors import ConfigError
from mentorgym.sandboxes.base import Sandbox
from mentorgym.sandboxes.choice import choose

SKILL_WORKFLOW = (
    "1. write the problem's arithmetic as a short python program that prints the result; "
    '2. call it as <tool_call>{"name": "python", "arguments": {"code": "..."}}</tool_call>; '
    "3. answer with exactly the printed number as <answer>NUMBER</answer>."
)

SYSTEM_PROMPT = (
    "Solve the math word problem. Use the python tool to compute; print the result. "
    "Give the final number as <answer>NUMBER</answer>."
)
"""Generated problems, answers in tags."""
ANSWER_FORMATS = ("tag", "boxed")
GENERATED_BOXED_PROMPT = (
    "Solve the math word problem. Use the python tool to compute; print the result. "
    "Give the final number as \\boxed{NUMBER}."
)
BOXED_FORMAT = "\\boxed{YOUR ANSWER} in a turn without tool calls"
DATASET_PROMPTS = {
    "tag": "Solve the math problem. You may use the python tool to compute; print the result. "
    "Give the final answer, simplified, as <answer>ANSWER</answer>.",
    "boxed": "Solve the math problem. You may use the python tool to compute; print the "
    "result. Please reason step by step, and put your final answer within \\boxed{}.",
}
"""Data sets (LaTeX answers); `boxed` is the papers' prompt for MATH and AIME."""
PYTHON_EXAMPLE = format_tool_call("python", {"code": "print(2 + 3)"})
MAX_CODE_CHARS = 100_000
"""Longest code a python call takes (it travels as one command-line argument)."""


class MathToolsEnv(TextEnv):
    """Math problems (generated, or a data set) solved with a python tool.

    Generated problems (the default) come with the program that made them, which is the
    expert's tool call. With `dataset=PATH` the problems come from a data set (GSM8K,
    MATH/MATH500, AIME, SVAMP or any columns; see `mentorgym.envs.math_tools.datasets`)
    and `num_tasks` is its size; the expert runs the set's program where it has one
    (SVAMP's equation) and otherwise answers with the gold answer. Answers are checked by
    `check_answer` (plain numbers, text, else math-verify with a time limit), and
    `info["grade"]` says which reading decided (`"timeout"` when math-verify ran out).

    `answer_format` says how the final answer is read, and the system prompt says the
    same: `"tag"` (`<answer>...</answer>`; a turn with one ends the episode) or `"boxed"`
    (the last `\\boxed{}` of a turn without tool calls, as the MATH and AIME papers ask).

    `reset(options={"index": k})` picks the k-th dataset problem; for generated problems
    it picks the problem of seed k (so index k is the same problem in every run).
    Without an index, the reset seed draws a problem at random.

    Each episode gets its own sandbox, made at the first tool call and closed at the next
    reset or close. By default it is isolated (`sandbox="auto"`: the Docker pool when an
    engine answers, else bubblewrap, else the env refuses to start; see
    `mentorgym.sandboxes.choice` and SECURITY.md); `sandbox_backend` says which, and so
    does each tool step's `info["sandbox"]`. A turn with an `<answer>` ends the episode
    (tool calls in that turn are not run); reward 1 when it matches the expected number, else 0.

    Args:
        dataset: a data set (a JSONL/JSON/Parquet/CSV file, a folder saved by `datasets`,
            or a Hugging Face name); None to generate problems.
        dataset_format: "gsm8k", "math", "aime" or "svamp"; None detects it.
        split, subset: which split and configuration of a Hugging Face data set.
        question_key, answer_key, id_key, solution_key: read any data set by its columns.
        answer_format: "tag" or "boxed" (see above).
        steps, max_value, fractions, percentages: difficulty of generated problems
            (see `mentorgym.envs.math_tools.problems`).
        max_tool_calls: python calls allowed per episode; later calls are refused with a
            format error, and the episode goes on until an answer or the turn limit.
        tool_timeout: seconds one python call may run.
        python_cmd: the interpreter command in the sandbox; `"python3 -S"` starts several
            times faster where site-packages are heavy, at the cost of third-party imports.
        sandbox: "auto", "docker", "bwrap" or "local" (no isolation: trusted code only).
        sandbox_factory: makes the sandbox for an episode, e.g.
            `lambda: DockerSandbox(image=...)`; overrides `sandbox`.
    """

    _computed: bool = False
    """Whether a tool output of this episode printed the expected answer (the expert's retry rule)."""

    def __init__(
        self,
        dataset: str | None = None,
        *,
        dataset_format: str | None = None,
        split: str | None = None,
        subset: str | None = None,
        question_key: str | None = None,
        answer_key: str | None = None,
        id_key: str | None = None,
        solution_key: str | None = None,
        answer_format: str = "tag",
        steps: int = 2,
        max_value: int = 20,
        fractions: bool = False,
        percentages: bool = False,
        max_tool_calls: int = 4,
        tool_timeout: float = 10.0,
        python_cmd: str = "python3",
        sandbox: str = "auto",
        sandbox_factory: Callable[[], Sandbox] | None = None,
        render_mode: str | None = None,
    ):
        super().__init__(render_mode=render_mode)
        if max_tool_calls < 0:
            raise ConfigError(f"max_tool_calls must be 0 or more, got {max_tool_calls}")
        self.difficulty = dict(
            steps=steps, max_value=max_value, fractions=fractions, percentages=percentages
        )
        generate_problem(0, **self.difficulty)  # fail at construction on bad knobs
        if answer_format not in ANSWER_FORMATS:
            raise ConfigError(
                f"answer_format must be one of {', '.join(ANSWER_FORMATS)}, got {answer_format!r}"
            )
        self.answer_format = answer_format
        self.answer_hint = ANSWER_FORMAT if answer_format == "tag" else BOXED_FORMAT
        self.expected = f"{PYTHON_EXAMPLE} or {self.answer_hint}"
        self.dataset = dataset
        self.problems: list[Problem] | None = (
            load_problems(
                dataset,
                format=dataset_format,
                split=split,
                subset=subset,
                question_key=question_key,
                answer_key=answer_key,
                id_key=id_key,
                solution_key=solution_key,
            )
            if dataset
            else None
        )
        self.num_tasks = len(self.problems) if self.problems is not None else None
        self.max_tool_calls = max_tool_calls
        self.tool_timeout = tool_timeout
        self.python_cmd = python_cmd
        if sandbox_factory is not None:
            self.sandbox_factory, self.sandbox_backend = sandbox_factory, "custom"
        else:
            chosen = choose(sandbox)
            self.sandbox_factory, self.sandbox_backend = chosen.factory, chosen.backend
        self.python_tool = self._make_python_tool()
        self.system_prompt = self._system_prompt(bool(dataset), answer_format)
        self.problem: Problem | None = None
        self._sandbox: Sandbox | None = None
        self._tool_calls = 0
        self._action_rng = np.random.default_rng()

    def _make_python_tool(self) -> Tool:
        return Tool(
            name="python",
            description=(
                "Run Python 3 code and return what it prints (stdout and stderr). Each call "
                "is a fresh process: print the values you need."
            ),
            parameters={
                "type": "object",
                "properties": {"code": {"type": "string", "description": "Python source"}},
                "required": ["code"],
            },
            run=self._run_python,
        )

    def _system_prompt(self, from_dataset: bool, answer_format: str) -> str:
        if from_dataset:
            prompt = DATASET_PROMPTS[answer_format]
        elif answer_format == "tag":
            prompt = SYSTEM_PROMPT
        else:
            prompt = GENERATED_BOXED_PROMPT
        return prompt + "\n\n" + tools_prompt([self.python_tool], self.answer_hint)

    # --- gymnasium API --------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[list[Message], dict[str, Any]]:
        super().reset(seed=seed)
        self._close_sandbox()
        index = (options or {}).get("index")
        if index is not None and (not isinstance(index, int | np.integer) or index < 0):
            raise ConfigError(f"options['index'] must be a non-negative integer, got {index!r}")
        if self.problems is not None:
            if index is not None and index >= len(self.problems):
                raise ConfigError(
                    f"index {index} is out of range: {self.dataset} holds {len(self.problems)} "
                    f"problems (0..{len(self.problems) - 1})"
                )
            k = (
                int(index)
                if index is not None
                else int(self.np_random.integers(len(self.problems)))
            )
            self.problem = self.problems[k]
        else:
            k = int(index) if index is not None else int(self.np_random.integers(2**31 - 1))
            self.problem = generate_problem(k, **self.difficulty)
        self._tool_calls = 0
        self._computed = False
        self._action_rng = np.random.default_rng(int(self.np_random.integers(2**63 - 1)))
        obs = [system(self.system_prompt), user(self.problem.question)]
        return obs, {"task_id": self.problem.task_id, "index": k}

    def step(self, action: str) -> StepResult:
        if self.problem is None:
            raise self.step_before_reset()
        parsed = parse_action(action)
        boxed = self.answer_format == "boxed"
        # With boxed answers an <answer> tag means nothing, so neither does an unclosed one.
        if parsed.error is not None and not (
            boxed and parsed.error.startswith("unclosed <answer>")
        ):
            return self._fail(self.format_error(parsed.error, self.expected))
        answer = parsed.answer if not boxed else None
        if boxed and not parsed.tool_calls and "\\boxed{" in action:
            answer = last_boxed(action)
            if answer is None:
                return self._fail(
                    self.format_error("the last \\boxed{ is not closed", self.expected)
                )
        if answer is not None:
            verdict = check_answer(answer, self.problem.answer)
            info = {
                "success": verdict.correct,
                "answer": answer,
                "expected": self.problem.answer,
                "grade": verdict.method,
            }
            return [], float(verdict.correct), True, False, info
        if not parsed.tool_calls:
            return self._fail(
                self.format_error("the turn has neither a tool call nor an answer", self.expected)
            )
        room = max(0, self.max_tool_calls - self._tool_calls)
        calls, skipped = parsed.tool_calls[:room], len(parsed.tool_calls) - room
        self._tool_calls += len(calls)
        messages, bad = run_tool_calls(calls, [self.python_tool])
        self._computed = self._computed or any(self._prints_answer(m["content"]) for m in messages)
        if bad:
            # Say what a good call looks like right where the error is.
            messages = [
                tool(f"{m['content']} Write {self.expected}.")
                if m["content"].startswith("Error:")
                else m
                for m in messages
            ]
        if skipped > 0:
            problem = (
                f"the limit of {self.max_tool_calls} tool calls per problem is reached, so "
                f"{skipped} call(s) were not run; give your final answer"
            )
            refused, *_ = self.format_error(problem, self.answer_hint)
            messages += refused
            bad = True
        info: dict[str, Any] = {
            "success": False,
            "tool_calls": self._tool_calls,
            "sandbox": self.sandbox_backend,
        }
        if bad:
            info["format_error"] = True
        return messages, 0.0, False, False, info

    def close(self) -> None:
        self._close_sandbox()
        super().close()

    # --- oracle, baseline, privileged context ----------------------------------------------

    def expert_action(self) -> str | None:
        """The problem's program as a python call where it has one, then the gold answer.

        Recovery: until some tool output has printed the answer, and while calls are left,
        the expert (re)runs the program, so after a wrong or failed call its label is the
        retry, not an answer the conversation has not computed yet."""
        if self.problem is None:
            return None
        calls_left = self._tool_calls < self.max_tool_calls
        if self.problem.program is not None and calls_left and not self._computed:
            return format_tool_call("python", {"code": self.problem.program})
        return self._final(self.problem.answer)

    def random_action(self) -> str:
        """An answer with a random small number (the random baseline)."""
        return self._final(str(int(self._action_rng.integers(0, 100))))

    def summarize_for_skill(
        self, turns: list[TurnRecord], success: bool, truncated: bool
    ) -> SkillSummary | None:
        """What a math episode teaches any problem: whether the answer was computed with the
        tool, tool failures, format errors. No numbers: another problem's answer does not transfer."""
        if not turns:
            return None
        last = turns[-1].info
        tools = sum("<tool_call>" in t.action for t in turns)
        fmt = sum(bool(t.info.get("format_error")) for t in turns)
        tool_errors = sum(
            "Error" in m["content"] or "Traceback" in m["content"]
            for t in turns[1:]
            for m in t.observation
            if m["role"] == "tool"
        )
        if success:
            worked = f"answered correctly after {tools} python call(s)."
        elif "answer" in last:
            worked = f"gave a wrong final answer after {tools} python call(s)."
        else:
            worked = "gave no final answer."
        mistakes = []
        if fmt:
            mistakes.append(
                f"{fmt} turn(s) were malformed (neither a valid tool call nor an answer)"
            )
        if tool_errors:
            mistakes.append(f"{tool_errors} python call(s) failed")
        if tools == 0 and not success:
            mistakes.append("answered without computing in python first")
        if truncated:
            mistakes.append(f"ran out of turns after {len(turns)}")
        return SkillSummary(
            worked, "; ".join(mistakes) or "none seen in this episode.", SKILL_WORKFLOW
        )

    def reference_solution(self) -> str | None:
        """Worked steps and, for generated problems, the program; None before reset.

        For privileged-context distillation: a teacher that sees this knows how to solve it.
        """
        if self.problem is None:
            return None
        parts = []
        if self.problem.program is not None:
            parts.append(f"Program:\n{self.problem.program}")
        if self.problem.solution is not None:
            parts.append(f"Steps:\n{self.problem.solution}")
        parts.append(f"Answer: {self.problem.answer}")
        return "\n".join(parts)

    # --- internals --------------------------------------------------------------------------

    def _final(self, answer: str) -> str:
        """The turn that gives `answer` in this env's answer format."""
        if self.answer_format == "boxed":
            return f"The final answer is \\boxed{{{answer}}}."
        return f"<answer>{answer}</answer>"

    def _fail(self, result: StepResult) -> StepResult:
        messages, reward, terminated, truncated, info = result
        return messages, reward, terminated, truncated, {**info, "success": False}

    def _run_python(self, arguments: dict[str, Any]) -> str:
        code = arguments["code"]
        if not isinstance(code, str):
            raise ValueError(f'"code" must be a string of Python source, got {type(code).__name__}')
        if len(code) > MAX_CODE_CHARS:
            raise ValueError(f'"code" is {len(code)} characters; the limit is {MAX_CODE_CHARS}')
        if self._sandbox is None:
            self._sandbox = self.sandbox_factory()
        # `python3 -c` needs nothing but a shell, so every Sandbox backend runs it the same way.
        result = self._sandbox.exec(
            f"{self.python_cmd} -c {shlex.quote(code)}", timeout=self.tool_timeout
        )
        out = result.output
        if result.timed_out:
            return f"{out}\n[timed out after {self.tool_timeout:g} s]".lstrip("\n")
        if not out.strip():
            out = "(no output: use print() to see a value)"
        return out

    def _prints_answer(self, output: str) -> bool:
        """Whether a tool output's last line is the expected answer."""
        lines = output.strip().splitlines()
        if self.problem is None or not lines or len(lines[-1]) > 100:
            return False
        return check_answer(lines[-1], self.problem.answer).correct

    def _close_sandbox(self) -> None:
        if self._sandbox is not None:
            sandbox, self._sandbox = self._sandbox, None
            sandbox.close()
