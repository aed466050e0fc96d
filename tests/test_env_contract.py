"""The Env contract: parsing, spaces, the registry, plugins, and the checker on every id."""

import json
import subprocess
import sys

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import mentorgym
from mentorgym.envs.base import (
    MessagesSpace,
    TextSpace,
    Tool,
    format_tool_call,
    parse_action,
    run_tool_calls,
)
from mentorgym.envs.registry import list_envs


def test_parse_tool_calls_and_answer():
    text = 'think\n<tool_call>{"name": "python", "arguments": {"code": "print(2)"}}</tool_call>\n<answer> 42 </answer>'
    parsed = parse_action(text)
    assert parsed.error is None
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [("python", {"code": "print(2)"})]
    assert parsed.answer == "42"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("<tool_call>{not json}</tool_call>", "not valid JSON"),
        ('<tool_call>{"arguments": {}}</tool_call>', '"name"'),
        ('<tool_call>{"name": "x", "arguments": [1]}</tool_call>', '"arguments"'),
        ('<tool_call>{"name": "x", "arguments": {}}', "unbalanced"),
        ("<answer>5", "unclosed <answer>"),
        (None, "must be a string"),
        (12, "must be a string"),
    ],
)
def test_malformed_actions_are_errors_not_exceptions(text, needle):
    parsed = parse_action(text)
    assert parsed.error is not None and needle in parsed.error


def test_arguments_given_as_a_json_string_are_accepted():
    parsed = parse_action('<tool_call>{"name": "x", "arguments": "{\\"a\\": 1}"}</tool_call>')
    assert parsed.tool_calls[0].arguments == {"a": 1}


def test_format_tool_call_round_trips():
    parsed = parse_action(format_tool_call("bash", {"command": "ls -la\necho 'hi'"}))
    assert parsed.tool_calls[0].arguments == {"command": "ls -la\necho 'hi'"}


def test_run_tool_calls_reports_unknown_tools_and_missing_arguments():
    echo = Tool(
        "echo",
        "echo text",
        {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        lambda a: a["text"],
    )
    calls = parse_action(
        format_tool_call("echo", {"text": "hi"})
        + format_tool_call("nope", {})
        + format_tool_call("echo", {})
    ).tool_calls
    messages, bad = run_tool_calls(calls, [echo])
    assert bad
    assert messages[0]["content"] == "hi"
    assert 'unknown tool "nope"' in messages[1]["content"] and "echo" in messages[1]["content"]
    assert "missing required argument" in messages[2]["content"]


def test_text_space_accepts_any_string_and_samples_deterministically():
    space = TextSpace(seed=3)
    assert space.contains("multi\nline {json: 'ok'} <tool_call>")
    assert not space.contains(b"bytes")
    again = TextSpace(seed=3)
    assert [space.sample() for _ in range(3)] == [again.sample() for _ in range(3)]
    assert MessagesSpace().contains([{"role": "tool", "content": "x"}])
    assert not MessagesSpace().contains([{"role": "robot", "content": "x"}])


def test_builtin_ids_are_in_gymnasium_registry():
    for env_id in [
        "mentorgym/Sokoban-v0",
        "mentorgym/MathTools-v0",
        "mentorgym/SWE-v0",
        "mentorgym/Boxoban-v0",
    ]:
        assert env_id in gymnasium.registry


@pytest.mark.parametrize("typo", ["mentorgym/Sokobn-v0", "Sokoban-v0", "mentorgym/MathTool-v0"])
def test_unknown_id_gets_did_you_mean(typo):
    with pytest.raises(gymnasium.error.Error, match="Did you mean"):
        mentorgym.make(typo)


def test_plugin_entry_point_registers_third_party_env():
    ids = [s.id for s in list_envs()]
    assert "toy/ReverseWord-v0" in ids
    assert "CartPole-v1" not in ids and "CartPole-v1" in [s.id for s in list_envs(include_all=True)]


def _checkable_ids() -> list[str]:
    # Remote-v0 needs a server, Ray-v0 names the env it hosts: tests/test_remote_env.py and
    # tests/test_ray_rollout.py check them.
    hosted = ("mentorgym/Remote-v0", "mentorgym/Ray-v0")
    return [s.id for s in list_envs() if s.id not in hosted]


@pytest.mark.parametrize("env_id", _checkable_ids())
def test_gymnasium_env_checker_passes(env_id):
    if env_id.startswith("mentorgym/SWE"):
        from mentorgym.sandboxes.docker import engine_available

        reason = engine_available()
        if reason:
            pytest.skip(reason)
    env = gymnasium.make(env_id).unwrapped
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mentorgym.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_lists_runs_and_evaluates_a_plugin_env(tmp_path):
    listed = json.loads(_cli("envs", "--json").stdout)
    assert any(
        row["id"] == "toy/ReverseWord-v0" and "Reverse a word" in row["description"]
        for row in listed
    )
    out = tmp_path / "toy.jsonl"
    r = _cli("rollout", "toy/ReverseWord-v0", "--agent", "expert", "-n", "4", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 4
    r = _cli("eval", "toy/ReverseWord-v0", "--agent", "expert", "-n", "6", "--json")
    stats = json.loads(r.stdout)
    assert stats["episodes"] == 6 and stats["success_rate"] == 1.0
    for key in ("mean_return", "mean_turns"):
        assert key in stats


def test_cli_unknown_env_and_bad_agent_spec_are_clear_errors():
    r = _cli("eval", "toy/ReverseWrd-v0", "--agent", "expert", "-n", "1")
    assert r.returncode == 2 and "Did you mean" in r.stderr and "Traceback" not in r.stderr
    r = _cli("eval", "toy/ReverseWord-v0", "--agent", "gpt", "-n", "1")
    assert r.returncode == 2 and "unknown agent spec" in r.stderr
