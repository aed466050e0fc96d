"""Every CLI command, fed malformed input, answers with one line and exit code 2 (issue 25).

The test walks the argparse parser: every subcommand and every argument it declares, so a
new subcommand is covered without anyone adding it here. Each argument is sorted into a
kind by its argparse `type` (the types in `mentorgym/cli/args.py`) or, for plain strings,
by the table `UNTYPED` below; an argument of no known kind fails `test_every_argument_has_a_kind`,
which says what to add. For each kind the test feeds the malformed values in `BAD` and checks:
exit code 2, one line on stderr that names the argument (its flag, name or the value given),
no traceback, and no file created or changed.

Servers never start: `uvicorn` is patched to fail the test if a command gets that far.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mentorgym import cli
from mentorgym.cli import args as types

Command = tuple[str, ...]

# --- the walk -------------------------------------------------------------------------------


def leaf_parsers(
    parser: argparse.ArgumentParser, path: Command = ()
) -> Iterator[tuple[Command, argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from leaf_parsers(child, (*path, name))


def arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    skip = (argparse._HelpAction, argparse._StoreTrueAction, argparse._StoreFalseAction)
    return [a for a in parser._actions if not isinstance(a, skip)]


TYPE_KINDS: dict[Callable[[str], object], str] = {
    types.positive_int: "int",
    types.non_negative_int: "int",
    types.port: "int",
    types.non_negative_float: "float",
    types.positive_float: "float",
    types.probability: "float",
    types.top_p: "float",
    types.input_file: "file",
    types.input_dir: "dir",
    types.input_path: "file",
    types.output_file: "out_file",
    types.output_dir: "out_dir",
    types.key_value: "key_value",
    types.env_id: "env_id",
}

UNTYPED: dict[str, str] = {
    # Plain-string arguments, by dest: what they hold. "text" is free text (a name, a
    # token, a host) that any string is valid for; the servers' host rule has its own test.
    "agent": "agent_spec",
    "teacher": "agent_spec",
    "spec": "agent_spec",
    "file": "task_file",
    "instance": "task_file",
    "host": "text",
    "token": "text",
    "api_key": "text",
    "served_model_name": "text",
    "address": "text",
    "image": "text",
    "model_name": "text",
    "id": "text",
    "client_env_arg": "text",
}


DEST_KINDS: dict[str, str] = {
    # A test log is free-form text: one without test results grades "not resolved" (as the
    # harness's own grader says); only a log with no text in it is a mistake.
    "log": "text_file",
}


def kind_of(action: argparse.Action) -> str | None:
    if action.dest in DEST_KINDS:
        return DEST_KINDS[action.dest]
    if action.choices is not None:
        return "choice"
    if action.type is not None:
        if getattr(action.type, "__module__", "") == "mentorgym.cli.sandbox":
            return "docker_tag"
        return TYPE_KINDS.get(action.type)  # type: ignore[arg-type]
    return UNTYPED.get(action.dest)


# --- the bad values, by kind ----------------------------------------------------------------

FILE_BAD = ["missing", "directory", "empty", "truncated_json", "truncated_yaml", "wrong_type",
            "binary", "huge_line"]  # fmt: skip
BAD: dict[str, list[str]] = {
    "int": ["-3", "abc", "1.5"],
    "float": ["-3", "abc", "nan"],
    "file": FILE_BAD,
    "task_file": FILE_BAD,
    "text_file": ["missing", "directory", "empty", "binary"],
    "dir": ["missing", "a_file"],
    "out_file": ["directory", "under_a_file"],
    "out_dir": ["a_file", "under_a_file"],
    "key_value": ["novalue", "=x"],
    "agent_spec": ["nosuch:thing", "replay:missing", "replay:binary", "hf:missing"],
    "env_id": ["mentorgym/Nope-v0", "no id at all"],
    "choice": ["bogus"],
    "docker_tag": ["Not A Tag!"],
    "text": [],
}


def cases() -> Iterator[tuple[Command, str, str]]:
    for command, parser in leaf_parsers(cli.build_parser()):
        for action in arguments(parser):
            for bad in BAD.get(kind_of(action) or "", []):
                yield command, action.dest, bad


CASES = list(cases())


def test_every_argument_has_a_kind() -> None:
    """A new argument needs a type from mentorgym/cli/args.py or an entry in UNTYPED."""
    unknown = [
        f"{' '.join(command)} {a.dest}"
        for command, parser in leaf_parsers(cli.build_parser())
        for a in arguments(parser)
        if kind_of(a) is None
    ]
    assert not unknown, (
        f"give these a type from mentorgym/cli/args.py or add them to UNTYPED: {unknown}"
    )
    assert len(CASES) > 200  # the walk reached every subcommand


# --- fixtures -------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
SMITH = {
    "instance_id": "owner__repo.abc123.lm_rewrite__x1",
    "repo": "swesmith/owner__repo.abc123",
    "patch": "diff --git a/x.py b/x.py\n",
    "FAIL_TO_PASS": ["tests/test_a.py::test_x"],
    "PASS_TO_PASS": ["tests/test_a.py::test_y"],
    "image_name": "jyangballin/swesmith.x86_64.owner_1776_repo.abc123",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good inputs for the arguments a command needs, and the malformed ones."""
    d = tmp_path_factory.mktemp("inputs")
    f = {name: d / name for name in ("smith.json", "log.txt", "traj.jsonl", "report.json")}
    f["smith.json"].write_text(json.dumps(SMITH, indent=2))
    f["log.txt"].write_text("tests/test_a.py::test_x PASSED\n")
    f["report.json"].write_text(json.dumps({SMITH["instance_id"]: {"resolved": False}}))
    assert cli.main(["rollout", "mentorgym/Sokoban-v0", "--agent", "expert", "-n", "1",
                     "--out", str(f["traj.jsonl"])]) == 0  # fmt: skip
    (d / "directory").mkdir()
    (d / "repo").mkdir()
    (d / "empty").write_bytes(b"")
    (d / "truncated_json").write_text(json.dumps([SMITH], indent=2)[:90])
    (d / "truncated_yaml").write_text("algorithm: dagger\nenv_id: [mentorgym/Sokoban-v0\n")
    (d / "wrong_type").write_text("[1, 2, 3]\n")
    (d / "binary").write_bytes(bytes(range(256)) * 64)
    (d / "huge_line").write_text("x" * (2 << 20) + "\n")
    (d / "a_file").write_text("a file\n")
    return {**f, "dir": d}


def good_value(action: argparse.Action, files: dict[str, Path], out: Path) -> str:
    """A valid value for a required argument, so the bad one is the only mistake."""
    by_dest = {
        "config": ROOT / "configs" / "sokoban_dagger.yaml",
        "log": files["log.txt"],
        "instance": files["smith.json"],
        "file": files["smith.json"],
        "trajectories": files["traj.jsonl"],
        "path": files["traj.jsonl"],
        "repo": files["dir"] / "repo",
    }
    kind = kind_of(action)
    if action.dest in by_dest:
        return str(by_dest[action.dest])
    if kind in ("out_file", "out_dir"):
        return str(out / f"{action.dest}.jsonl")
    if kind == "env_id":
        return "mentorgym/Sokoban-v0"
    if kind == "agent_spec":
        return "expert"
    raise AssertionError(f"no good value for the required argument {action.dest}; add one")


def bad_value(bad: str, files: dict[str, Path]) -> str:
    d = files["dir"]
    if bad == "missing":
        return str(d / "no-such-file.json")
    if bad == "under_a_file":
        return str(d / "a_file" / "out.jsonl")
    if bad in ("replay:missing", "hf:missing"):
        return bad.replace("missing", str(d / "no-such-file"))
    if bad == "replay:binary":
        return f"replay:{d / 'binary'}"
    if (d / bad).exists():
        return str(d / bad)
    return bad


def argv_for(
    command: Command, dest: str, value: str, files: dict[str, Path], out: Path
) -> list[str]:
    parser = dict(leaf_parsers(cli.build_parser()))[command]
    argv = list(command)
    for action in arguments(parser):
        if action.dest == dest:
            given = value
        elif action.required or not action.option_strings:
            given = good_value(action, files, out)
        else:
            continue
        flag = action.option_strings[-1:] if action.option_strings else []
        argv += [*flag, given]
    if command == ("view",):
        argv.append("--list")  # the terminal view reads the file; the web one would serve it
    if command == ("swe", "check"):
        argv.append("--no-images")
    return argv


def snapshot(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                p = Path(dirpath) / name
                out[str(p)] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def no_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command accepted the bad input and started a server")

    monkeypatch.setattr(uvicorn, "run", refuse)
    monkeypatch.setattr(uvicorn.Server, "run", refuse)


# --- the test -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "dest", "bad"), CASES, ids=[f"{' '.join(c)}-{d}-{b}" for c, d, b in CASES]
)
def test_bad_input_is_one_line_and_exit_2(
    command: Command,
    dest: str,
    bad: str,
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_servers: None,
) -> None:
    monkeypatch.chdir(tmp_path)  # anything written to a default place lands here
    value = bad_value(bad, files)
    argv = argv_for(command, dest, value, files, tmp_path)
    before = snapshot(files["dir"], tmp_path)
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, f"{argv}: {err}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"{argv} exited {code}: {err}"
    assert len(lines) == 1, f"{argv} said more than one line: {err}"
    parser = dict(leaf_parsers(cli.build_parser()))[command]
    action = next(a for a in arguments(parser) if a.dest == dest)
    names = {*action.option_strings, action.dest, str(action.metavar), value}
    assert any(n and n in lines[0] for n in names), f"{argv}: {lines[0]!r} names no argument"
    assert snapshot(files["dir"], tmp_path) == before, f"{argv} created or changed a file"


# --- the cases the issue names, one by one --------------------------------------------------


def swe_check(path: Path | str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["swe", "check", str(path), "--no-images"])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("shape", ["object", "list", "jsonl", "mapping", "jsonl_no_final_newline"])
def test_swe_task_files_in_every_shape(
    shape: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SWE-smith ships one JSON object per instance; SWE-bench dumps lists; ours are JSONL."""
    from mentorgym.envs.swe.tasks import load_tasks, read_instance

    other = {**SMITH, "instance_id": "owner__repo.abc123.func_pm__y2"}
    text = {
        "object": json.dumps(SMITH, indent=2),
        "list": json.dumps([SMITH, other], indent=2),
        "jsonl": f"{json.dumps(SMITH)}\n\n{json.dumps(other)}\n",
        "mapping": json.dumps({SMITH["instance_id"]: SMITH, other["instance_id"]: other}),
        "jsonl_no_final_newline": f"{json.dumps(SMITH)}\n{json.dumps(other)}",  # no final newline
    }[shape]
    path = tmp_path / "tasks.json"
    path.write_text(text)
    tasks = load_tasks(str(path))
    assert tasks[0]["instance_id"] == SMITH["instance_id"]
    assert tasks[0]["task_kind"] == "swesmith" and tasks[0]["bug_patch"] == SMITH["patch"]
    assert len(tasks) == (1 if shape == "object" else 2)
    inst = read_instance(str(path), SMITH["instance_id"])
    assert inst["FAIL_TO_PASS"] == SMITH["FAIL_TO_PASS"]
    code, out, _ = swe_check(path, capsys)
    assert code == 0 and f"{len(tasks)} task(s)" in out


def test_swe_tasks_from_a_datasets_folder(tmp_path: Path, capsys) -> None:
    datasets = pytest.importorskip("datasets")
    from mentorgym.envs.swe.tasks import load_tasks

    other = {**SMITH, "instance_id": "owner__repo.abc123.func_pm__y2"}
    datasets.Dataset.from_list([SMITH, other]).save_to_disk(str(tmp_path / "ds"))
    assert [t["instance_id"] for t in load_tasks(str(tmp_path / "ds"))] == [
        SMITH["instance_id"],
        other["instance_id"],
    ]
    datasets.DatasetDict({"train": datasets.Dataset.from_list([SMITH])}).save_to_disk(
        str(tmp_path / "dd")
    )
    assert len(load_tasks(str(tmp_path / "dd"))) == 1
    code, out, _ = swe_check(tmp_path / "ds", capsys)
    assert code == 0 and "2 task(s)" in out
    (tmp_path / "plain").mkdir()
    code, _, err = swe_check(tmp_path / "plain", capsys)
    assert code == 2 and "not a dataset saved by `datasets`" in err


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "is empty"),
        (b'[{"instance_id": "a", "FAIL', "not valid JSON"),
        (b"[1, 2, 3]", "[0] is a JSON int"),
        (b'{"instance_id": "a"}\n[4]\n', ":2 is a JSON list"),
        (b'{"instance_id": "a"}\n{"instance_id": \n', ":2 is not valid JSON"),
        (bytes(range(256)), "is not text"),
        (b"instance_id,repo\n", "neither JSON nor JSONL"),
    ],
)
def test_swe_task_file_errors_name_file_and_record(
    content: bytes, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tasks.json"
    path.write_bytes(content)
    for argv in (
        ["swe", "check", str(path), "--no-images"],
        ["swe", "grade", str(path), "--instance", str(path)] if content else None,
        ["eval", "mentorgym/SWE-v0", "--agent", "expert", "-n", "1", "--env-arg", f"tasks={path}"],
    ):
        if argv is None:  # grade refuses an empty log before it reads the instance
            continue
        code = cli.main(argv)
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err, f"{argv}: {err}"
        assert says in err and str(path) in err and len(err.strip().splitlines()) == 1, err


def test_swe_grade_a_swesmith_instance(files: dict[str, Path], capsys) -> None:
    argv = ["swe", "grade", str(files["log.txt"]), "--instance", str(files["smith.json"])]
    assert cli.main([*argv, "--report", str(files["report.json"])]) == 0
    assert SMITH["instance_id"] in capsys.readouterr().out


def test_a_bug_shows_its_traceback_and_asks_for_a_report(monkeypatch, capsys) -> None:
    from mentorgym.cli import episodes

    def broken(args: argparse.Namespace) -> None:
        raise RuntimeError("an invariant of ours broke")

    monkeypatch.setattr(episodes, "cmd_envs", broken)
    assert cli.main(["envs"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: an invariant of ours broke" in err
    assert "bug in mentorgym" in err and "please report" in err


@pytest.mark.parametrize("argv", [["serve", "mentorgym/Sokoban-v0"], ["serve-model", "tiny"],
                                  ["view", "."]])  # fmt: skip
def test_servers_refuse_an_open_bind_without_a_token(
    argv: list[str], no_servers: None, capsys, monkeypatch
) -> None:
    for var in ("MENTORGYM_TOKEN", "MENTORGYM_SERVE_TOKEN", "MENTORGYM_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert cli.main([*argv, "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "0.0.0.0" in err


def test_cli_in_a_subprocess_says_one_line(files: dict[str, Path]) -> None:
    """The installed entry point, not only main(): what a user's shell sees."""
    import subprocess
    import sys

    for argv in (
        ["swe", "check", str(files["dir"] / "empty")],
        ["eval", "mentorgym/Sokoban-v0", "--agent", "expert", "-n", "-3"],
        ["view", str(files["dir"] / "binary"), "--list"],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "mentorgym.cli", *argv], capture_output=True, text=True
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# --- nothing lost ---------------------------------------------------------------------------


def _bad_task_env(bad_seed: int = -1):
    """Answer 1 in one turn; the task of seed `bad_seed` is malformed (a user's data error)."""
    from mentorgym.envs.base import TextEnv, parse_action, system, user
    from mentorgym.errors import ConfigError

    class Env(TextEnv):
        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            if seed == bad_seed:
                raise ConfigError(f"task {seed} of the data file is malformed")
            return [system("Say 1."), user("go")], {"task_id": f"t{seed}"}

        def step(self, action):
            ok = parse_action(action).answer == "1"
            return [user("done")], float(ok), True, False, {"success": ok}

        def expert_action(self):
            return "<answer>1</answer>"

    return Env()


import gymnasium  # noqa: E402

gymnasium.register("test/BadTask-v0", entry_point=_bad_task_env, max_episode_steps=2)


def test_rollout_stopped_halfway_keeps_what_it_wrote(tmp_path: Path, capsys) -> None:
    from mentorgym.agents.trajectory import read_trajectories

    out = tmp_path / "r.jsonl"
    base = ["rollout", "test/BadTask-v0", "--agent", "expert", "-n", "5", "--concurrency", "1"]
    assert cli.main([*base, "--out", str(out), "--env-arg", "bad_seed=3"]) == 2
    err = capsys.readouterr().err
    assert "task 3 of the data file is malformed" in err and "--resume" in err
    assert "stopped after 3 new episode(s)" in err and len(err.strip().splitlines()) == 1
    assert [t.seed for t in read_trajectories(out)] == [0, 1, 2]
    # fixed, the run goes on from where it stopped, and plays no episode twice
    assert cli.main([*base, "--out", str(out), "--resume"]) == 0
    assert sorted(t.seed for t in read_trajectories(out)) == [0, 1, 2, 3, 4]


def test_resume_after_a_writer_killed_mid_line(tmp_path: Path, capsys) -> None:
    from mentorgym.agents.trajectory import read_trajectories

    out = tmp_path / "r.jsonl"
    base = ["rollout", "test/BadTask-v0", "--agent", "expert", "--concurrency", "1"]
    assert cli.main([*base, "-n", "2", "--out", str(out)]) == 0
    with open(out, "ab") as f:  # what a process killed while writing episode 2 leaves
        f.write(b'{"schema": 1, "env_id": "test/BadTask-v0", "turns": [{"act')
    assert cli.main([*base, "-n", "4", "--out", str(out), "--resume"]) == 0
    assert sorted(t.seed for t in read_trajectories(out)) == [0, 1, 2, 3]


def test_out_that_is_not_a_trajectories_file_is_left_alone(tmp_path: Path, capsys) -> None:
    for content in (b"lr: 0.1\nsteps: 3\n", bytes(range(256))):
        out = tmp_path / "config.yaml"
        out.write_bytes(content)
        argv = ["rollout", "test/BadTask-v0", "--agent", "expert", "-n", "1", "--out", str(out)]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert str(out) in err and len(err.strip().splitlines()) == 1, err
        assert out.read_bytes() == content
