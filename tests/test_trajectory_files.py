"""Reading trajectory files: a bad line is a clear error naming the file and line, or is
skipped and counted when asked; a torn last line (a writer killed mid-line) is left out."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mentorgym.agents.trajectory import (
    BadLines,
    Trajectory,
    TrajectoryFileError,
    Turn,
    read_trajectories,
)
from mentorgym.cli import main


def line(seed: int) -> bytes:
    traj = Trajectory(env_id="toy", seed=seed, turns=[Turn(observation=[], actor="s", action="a")])
    return json.dumps(traj.to_dict()).encode() + b"\n"


def write(tmp_path: Path, *lines: bytes) -> Path:
    path = tmp_path / "trajs.jsonl"
    path.write_bytes(b"".join(lines))
    return path


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (b'{"schema": 1, "env_id": "\xff"}\n', "not UTF-8 (byte 0xff at column 26)"),
        (b"{not json\n", "not JSON"),
        (b"[1, 2]\n", "a JSON list, not a trajectory object"),
        (b'{"schema": 1, "env_id": "toy"}\n', "not a trajectory (KeyError: 'turns')"),
        (b'{"schema": 99, "turns": []}\n', "trajectory schema 99 is not 1"),
    ],
)
def test_a_bad_line_raises_naming_file_and_line(tmp_path: Path, bad: bytes, reason: str) -> None:
    path = write(tmp_path, line(0), bad, line(2))
    with pytest.raises(TrajectoryFileError) as e:
        list(read_trajectories(path))
    assert f"{path}:2: {reason}" in str(e.value)
    assert 'on_bad_line="skip"' in str(e.value)


def test_skip_mode_counts_and_logs_bad_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, line(0), b"\xff\xfe\n", line(1), b"{oops\n", line(2))
    bad = BadLines()
    with caplog.at_level(logging.WARNING):
        trajs = list(read_trajectories(path, on_bad_line="skip", bad=bad))
    assert [t.seed for t in trajs] == [0, 1, 2]
    assert bad.count == 2 and not bad.torn_tail
    assert bad.examples[0].startswith(f"{path}:2: not UTF-8")
    assert bad.examples[1].startswith(f"{path}:4: not JSON")
    assert "skipped 2 line(s)" in caplog.text


def test_a_torn_last_line_is_left_out_in_both_modes(tmp_path: Path) -> None:
    path = write(tmp_path, line(0), line(1)[:20])
    assert [t.seed for t in read_trajectories(path)] == [0]
    bad = BadLines()
    assert len(list(read_trajectories(path, on_bad_line="skip", bad=bad))) == 1
    assert bad.torn_tail and bad.count == 0


def test_view_reports_a_bad_byte_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The terminal listing names the bad line and goes on with the good ones (as the web
    # viewer does), instead of stopping on a UnicodeDecodeError traceback.
    path = write(tmp_path, line(0), b"\xff\n")
    assert main(["view", str(path), "--list"]) == 0
    out, err = capsys.readouterr()
    text = " ".join((out + err).split())  # rich wraps long paths
    assert f"{path} line 2: not valid UTF-8" in text
    assert "Traceback" not in text
    assert "toy" in out  # the good episode is still listed


def test_training_configs_choose_raise_or_skip() -> None:
    from mentorgym.errors import ConfigError
    from mentorgym.training.dagger import Config

    assert Config().bad_lines == "raise"
    Config(bad_lines="skip").validate()
    with pytest.raises(ConfigError, match="bad_lines"):
        Config(bad_lines="ignore").validate()
