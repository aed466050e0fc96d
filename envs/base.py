"""The text Env contract: chat messages in, the assistant's raw text out.

An episode is a conversation. `reset()` returns the opening messages (a system
prompt that describes the tools, then the task); `step(text)` takes the
assistant's whole turn and returns the messages to append (tool results, the
next observation). Tool calls use the Qwen/Hermes form

    <tool_call>{"name": "python", "arguments": {"code": "print(1+1)"}}</tool_call>

and a final answer uses `<answer>...</answer>`. A malformed turn is never an
exception: the env answers with a message that says what it expected and sets
`info["format_error"] = True`. Turn limits are Gymnasium's `TimeLimit`
(`max_episode_steps` at registration), not code here.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, TypedDict

import gymnasium
from gymnasium import spaces
from gymnasium.error import ResetNeeded

Role = Literal["system", "user", "assistant", "tool"]


class Message(TypedDict):
    role: Role
    content: str


def system(content: str) -> Message:
    return {"role": "system", "content": content}


def user(content: str) -> Message:
    return {"role": "user", "content": content}


def assistant(content: str) -> Message:
    return {"role": "assistant", "content": content}


def tool(content: str) -> Message:
    return {"role": "tool", "content": content}


# --- spaces ---------------------------------------------------------------------------------

_SAMPLE_CHARS = string.ascii_letters + string.digits + string.punctuation + " \n"


class TextSpace(spaces.Space[str]):
    """Any Python string. (Gymnasium's `Text` rejects newlines and most punctuation.)"""

    def __init__(self, max_sample_length: int = 64, seed: int | None = None):
        super().__init__(shape=None, dtype=None, seed=seed)
        self.max_sample_length = max_sample_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        n = int(self.np_random.integers(1, self.max_sample_length + 1))
        idx = self.np_random.integers(0, len(_SAMPLE_CHARS), size=n)
        return "".join(_SAMPLE_CHARS[i] for i in idx)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "TextSpace()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextSpace)


class MessagesSpace(spaces.Space[list]):
    """A list of chat messages: dicts with a `role` and a string `content`."""

    def __init__(self, seed: int | None = None):
        super().__init__(shape=None, dtype=None, seed=seed)
        self._text = TextSpace(seed=seed)

    def sample(self, mask: Any = None, probability: Any = None) -> list[Message]:
        return [user(self._text.sample())]

    def seed(self, seed: int | None = None) -> int | list[int] | dict[str, int]:
        out = super().seed(seed)
        self._text.seed(seed)
        return out

    def contains(self, x: Any) -> bool:
        return isinstance(x, list) and all(
            isinstance(m, dict)
            and m.get("role") in ("system", "user", "assistant", "tool")
            and isinstance(m.get("content"), str)
            for m in x
        )

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MessagesSpace()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MessagesSpace)


# --- parsing the assistant's text -----------------------------------------------------------

TOOL_CALL_FORMAT = '<tool_call>{"name": "TOOL_NAME", "arguments": {...}}</tool_call>'
ANSWER_FORMAT = "<answer>YOUR ANSWER</answer>"

_TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ParsedAction:
    """What an assistant turn asked for. `error` is set when the text could not be understood."""

    tool_calls: list[ToolCall] = field(default_factory=list)
    answer: str | None = None
    error: str | None = None


def parse_action(text: object) -> ParsedAction:
    """Parse tool calls and an answer out of one assistant turn; never raises.

    Every `<tool_call>` block must hold a JSON object with a string `name` and an
    object `arguments`. Unclosed tags, bad JSON and wrong types come back as `error`
    with a sentence that names the problem and the expected form.
    """
    if not isinstance(text, str):
        return ParsedAction(error=f"the action must be a string of text, got {type(text).__name__}")
    calls: list[ToolCall] = []
    for i, match in enumerate(_TOOL_CALL_RE.finditer(text), start=1):
        body = match.group(1).strip()
        try:
            obj = json.loads(body)
        except json.JSONDecodeError as e:
            return ParsedAction(
                error=f"tool call {i} is not valid JSON ({e.msg} at position {e.pos}); expected {TOOL_CALL_FORMAT}"
            )
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return ParsedAction(
                error=f'tool call {i} needs a string "name"; expected {TOOL_CALL_FORMAT}'
            )
        args = obj.get("arguments", {})
        if isinstance(args, str):  # some models emit the arguments as a JSON string
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                pass
        if not isinstance(args, dict):
            return ParsedAction(
                error=f'tool call {i} ("{obj["name"]}") needs "arguments" to be a JSON object; expected {TOOL_CALL_FORMAT}'
            )
        calls.append(ToolCall(obj["name"], args))
    if text.count("<tool_call>") != len(calls) or text.count("</tool_call>") != len(calls):
        return ParsedAction(error=f"unbalanced <tool_call> tags; expected {TOOL_CALL_FORMAT}")
    answers = _ANSWER_RE.findall(text)
    if text.count("<answer>") != len(answers):
        return ParsedAction(
            tool_calls=calls, error=f"unclosed <answer> tag; expected {ANSWER_FORMAT}"
        )
    answer = answers[-1].strip() if answers else None
    return ParsedAction(tool_calls=calls, answer=answer)


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """The text an assistant writes to call a tool (what experts and scripted agents emit)."""
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"


# --- tools ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """A tool the agent may call: its JSON-schema description and the function that runs it."""

    name: str
    description: str
    parameters: dict[str, Any]
    """JSON schema of the arguments object."""
    run: Callable[[dict[str, Any]], str]
    """Takes the arguments, returns the tool's text result. Raise `ValueError` for bad arguments."""

    def schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def tools_prompt(tools: list[Tool], answer_format: str = ANSWER_FORMAT) -> str:
    """The Qwen/Hermes tool section of a system prompt; it ends with how to give the answer."""
    lines = "\n".join(json.dumps(t.schema()) for t in tools)
    return (
        "You may call tools. Their signatures are inside <tools></tools>:\n"
        f"<tools>\n{lines}\n</tools>\n"
        "To call a tool, write a JSON object with its name and arguments inside tags:\n"
        f"{TOOL_CALL_FORMAT}\n"
        f"When you are done, write your final answer as {answer_format}."
    )


def run_tool_calls(calls: list[ToolCall], tools: list[Tool]) -> tuple[list[Message], bool]:
    """Run each call; returns one tool message per call and whether any call was malformed."""
    by_name = {t.name: t for t in tools}
    messages: list[Message] = []
    bad = False
    for call in calls:
        t = by_name.get(call.name)
        if t is None:
            bad = True
            known = ", ".join(sorted(by_name)) or "none"
            messages.append(tool(f'Error: unknown tool "{call.name}". Available tools: {known}.'))
            continue
        missing = [k for k in t.parameters.get("required", []) if k not in call.arguments]
        if missing:
            bad = True
            messages.append(
                tool(f'Error: tool "{call.name}" is missing required argument(s) {missing}.')
            )
            continue
        try:
            messages.append(tool(t.run(call.arguments)))
        except (ValueError, TypeError, KeyError) as e:
            bad = True
            messages.append(tool(f'Error: tool "{call.name}" rejected its arguments: {e}'))
    return messages, bad


# --- the Env base -------------------------------------------------------------------------------

StepResult = tuple[list[Message], float, bool, bool, dict[str, Any]]


class TurnRecord(Protocol):
    """One finished turn as a summary hook reads it (a rollout's `Turn` is one)."""

    observation: list[Message]
    action: str
    reward: float
    info: dict[str, Any]


class SkillSummary(NamedTuple):
    """What an episode teaches about the task family, written so that it transfers to other
    tasks of the env: no move lists, answers or other facts of this one task."""

    success_analysis: str
    mistake_analysis: str
    golden_workflow: str


class TextEnv(gymnasium.Env[list[Message], str]):
    """Base for mentorgym envs: the spaces, the oracle hook and the format-error reply.

    Subclasses implement `reset` (call `super().reset(seed=seed)` first, which seeds
    `self.np_random`) and `step`. Optional hooks: `expert_action()` for the oracle's
    next turn, `random_action()` for a baseline agent, `num_tasks` for a finite task set
    that `reset(options={"index": k})` walks.
    """

    metadata: dict[str, Any] = {"render_modes": []}
    num_tasks: int | None = None
    """Size of a finite task set (levels, dataset problems, SWE tasks), else None."""

    def __init__(self, render_mode: str | None = None):
        self.observation_space = MessagesSpace()
        self.action_space = TextSpace()
        self.render_mode = render_mode

    def expert_action(self) -> str | None:
        """The oracle's next assistant text for the current state, or None; does not advance the env."""
        return None

    def random_action(self) -> str:
        """A uniformly random legal-looking turn, for the `random` baseline agent."""
        return self.action_space.sample()

    def on_truncation(self) -> tuple[float, dict[str, Any]]:
        """Called (by the `TruncationRules` wrapper every `mentorgym.make` adds) when the turn
        limit cuts the episode short. An env that grades final states (SWE) scores the state
        as it stands; returns (extra reward, info)."""
        return 0.0, {}

    def step_before_reset(self) -> ResetNeeded:
        """The error every env raises when `step` comes before `reset`."""
        return ResetNeeded(
            f"{type(self).__name__}.step() called before reset(); call reset() first"
        )

    def summarize_for_skill(
        self, turns: list[TurnRecord], success: bool, truncated: bool
    ) -> SkillSummary | None:
        """A transferable skill from a finished episode (Skill-SD's rule-based summarizer);
        None for an empty one. This generic default knows only the answer format; envs that
        know what a good turn is (Sokoban, math) say more."""
        if not turns:
            return None
        n = len(turns)
        fmt = sum(bool(t.info.get("format_error")) for t in turns)
        outcome = "solved the task" if success else "did not solve the task"
        mistakes = []
        if fmt:
            mistakes.append(f"{fmt} of {n} turns did not follow the required format")
        if truncated:
            mistakes.append(f"ran out of turns after {n}")
        return SkillSummary(
            f"{outcome} in {n} turns.",
            "; ".join(mistakes) or "none seen in this episode.",
            f"read the task, act one step per turn, and finish with {ANSWER_FORMAT}.",
        )

    def format_error(self, problem: str, expected: str = ANSWER_FORMAT) -> StepResult:
        """The reply to a turn that could not be understood: a message that says what to write."""
        msg = tool(f"Format error: {problem}. Write {expected}.")
        return [msg], 0.0, False, False, {"format_error": True, "error": problem}


class TruncationRules(gymnasium.Wrapper):
    """Where Gymnasium keeps such rules, in a wrapper: when a step is truncated (the turn limit)
    and not terminated, the env's `on_truncation` hook runs and its reward and info are added
    to that step's. `mentorgym.make` puts it outside the `TimeLimit`, so every driver (the
    rollout engine, the env server, a Ray actor, a user's loop) gets the same final step.
    A sandbox that dies while grading adds `grading_error` to the info instead of ending the
    caller's run."""

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        hook = getattr(self.env.unwrapped, "on_truncation", None)
        if truncated and not terminated and hook is not None:
            from mentorgym.errors import SandboxError

            try:
                extra_reward, extra_info = hook()
            except SandboxError as e:
                extra_reward, extra_info = 0.0, {"grading_error": f"{type(e).__name__}: {e}"}
            reward, info = reward + extra_reward, {**info, **extra_info}
        return obs, reward, terminated, truncated, info
