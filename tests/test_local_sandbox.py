"""LocalSandbox: the Sandbox contract, its limits, and what it does with odd output."""

from __future__ import annotations

import os
import resource

import pytest

from mentorgym.errors import SandboxError
from mentorgym.sandboxes.base import Sandbox
from mentorgym.sandboxes.local import LocalSandbox, _user_task_count


@pytest.fixture
def sb():
    with LocalSandbox(memory_mb=512, output_limit=2_000) as s:
        yield s


def test_is_a_sandbox_and_runs_in_its_temp_dir(sb: LocalSandbox) -> None:
    assert isinstance(sb, Sandbox)
    r = sb.exec("pwd; echo out; echo err >&2; exit 3")
    assert r.exit_code == 3 and not r.timed_out and not r.truncated
    lines = r.output.splitlines()
    assert os.path.realpath(lines[0]) == os.path.realpath(sb.root)
    assert lines[1:] == ["out", "err"]


def test_timeout_kills_the_group_and_keeps_output(sb: LocalSandbox, tmp_path) -> None:
    marker = tmp_path / "child-survived"
    # A background child that would write the marker after the timeout must die too.
    r = sb.exec(f"(sleep 1.5; touch {marker}) & echo started; sleep 30", timeout=0.5)
    assert r.timed_out and r.exit_code == -1
    assert r.output.startswith("started")
    sb.exec("sleep 2", timeout=1.6)  # outlast the child's sleep
    assert not marker.exists()


def test_background_jobs_do_not_hold_the_command(sb: LocalSandbox) -> None:
    r = sb.exec("sleep 30 & echo done", timeout=20)
    assert r.exit_code == 0 and not r.timed_out and r.output == "done\n"


def test_memory_limit(sb: LocalSandbox) -> None:
    r = sb.exec("python3 -c 'x = bytearray(1024 * 1024 * 1024); print(len(x))'")
    assert r.exit_code != 0 and "MemoryError" in r.output
    ok = sb.exec("python3 -c 'x = bytearray(16 * 1024 * 1024); print(len(x))'")
    assert ok.exit_code == 0 and ok.output.strip() == str(16 * 1024 * 1024)


def child_limit(s: LocalSandbox, kind: str) -> int:
    code = f"import resource; print(resource.getrlimit(resource.{kind})[0])"
    return int(s.exec(f"python3 -c '{code}'").output)


def test_process_limit_is_relative_to_the_users_count(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (_user_task_count(os.getuid()) or 0) >= 1  # this process at least
    inherited = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    with LocalSandbox(max_processes=50) as s:
        if os.getuid() == 0:  # the kernel exempts root, so none is set
            assert child_limit(s, "RLIMIT_NPROC") == inherited
        # As a user who runs nothing yet, the limit is exactly `max_processes`.
        monkeypatch.setattr(os, "getuid", lambda: 54_321)
        assert child_limit(s, "RLIMIT_NPROC") == 50


def test_no_limits_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getuid", lambda: 54_321)
    with LocalSandbox(max_processes=None, memory_mb=None) as s:
        assert child_limit(s, "RLIMIT_AS") == resource.getrlimit(resource.RLIMIT_AS)[0]
        assert child_limit(s, "RLIMIT_NPROC") == resource.getrlimit(resource.RLIMIT_NPROC)[0]


def test_output_is_truncated_with_a_notice(sb: LocalSandbox) -> None:
    r = sb.exec("python3 -c \"print('a' * 5000 + 'END')\"")
    assert r.truncated and len(r.output) < 2_200
    assert "output truncated" in r.output and r.output.rstrip().endswith("END")
    # Far more than the reader keeps: drained, counted, and still cut to the limit.
    big = sb.exec("python3 -c \"import sys; sys.stdout.write('b' * 1_000_000 + 'TAIL')\"")
    assert big.truncated and len(big.output) < 2_200
    assert "of 1000004 bytes cut" in big.output and big.output.endswith("TAIL")


def test_non_utf8_output_is_replaced(sb: LocalSandbox) -> None:
    r = sb.exec("printf 'a\\377\\376b'")
    assert r.output == "a\ufffd\ufffdb"


def test_files_are_relative_to_the_sandbox(sb: LocalSandbox) -> None:
    sb.write_file("sub/dir/x.txt", "héllo")
    assert sb.read_file("sub/dir/x.txt") == "héllo".encode()
    assert sb.exec("cat sub/dir/x.txt").output == "héllo"
    sb.write_file("b.bin", b"\x00\x01")
    assert (sb.root / "b.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(FileNotFoundError):
        sb.read_file("missing.txt")


def test_python3_is_this_interpreter(sb: LocalSandbox) -> None:
    import sys

    r = sb.exec("python3 -c 'import sys; print(sys.version)'")
    assert r.output.strip() == sys.version


def test_close_twice_removes_dir_and_refuses_work() -> None:
    s = LocalSandbox()
    root = s.root
    assert root.is_dir()
    s.close()
    s.close()
    assert not root.exists()
    with pytest.raises(SandboxError, match="closed"):
        s.exec("true")
    with LocalSandbox() as s2:
        root2 = s2.root
    assert not root2.exists()


def test_warns_once_that_it_is_no_boundary(monkeypatch) -> None:
    import warnings

    from mentorgym.sandboxes import local

    monkeypatch.setattr(local, "_warned", False)
    with pytest.warns(local.UnisolatedSandboxWarning, match="no security boundary"):
        LocalSandbox().close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LocalSandbox().close()  # the second one is silent


def test_commands_get_a_clean_environment(monkeypatch) -> None:
    monkeypatch.setenv("MENTORGYM_TEST_SECRET", "hunter2")
    with LocalSandbox(env={"EXTRA": "1"}) as s:
        out = s.exec("env").output
    names = {line.split("=", 1)[0] for line in out.splitlines() if "=" in line}
    assert "hunter2" not in out and "EXTRA=1" in out
    assert {"PATH", "HOME", "LANG"} <= names
    assert names <= {
        "PATH",
        "HOME",
        "LANG",
        "EXTRA",
        "PYTHONDONTWRITEBYTECODE",
        "PWD",
        "SHLVL",
        "_",
    }
