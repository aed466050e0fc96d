"""Docker sandboxes against a real engine; skipped with the reason when none answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from mentorgym.errors import SandboxError
from mentorgym.sandboxes.base import Sandbox
from mentorgym.sandboxes.docker import RUN_ID, DockerSandbox, client, engine_available, reap

REASON = engine_available()
pytestmark = [pytest.mark.docker, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


@pytest.fixture(scope="module")
def image() -> str:
    from mentorgym.sandboxes.image import build_base

    return build_base()


@pytest.fixture(scope="module")
def sb(image: str) -> Iterator[DockerSandbox]:
    with DockerSandbox(image) as box:
        yield box


def _exists(container_id: str) -> bool:
    import docker.errors

    try:
        client().containers.get(container_id)
    except docker.errors.NotFound:
        return False
    return True


def test_protocol_and_round_trip(sb: DockerSandbox) -> None:
    assert isinstance(sb, Sandbox)
    r = sb.exec("echo hello; echo err >&2; exit_code_test() { return 3; }; exit_code_test")
    assert r.output == "hello\nerr\n"
    assert r.exit_code == 3 and not r.timed_out and not r.truncated
    assert sb.exec("printf 'no newline'").output == "no newline"
    assert sb.exec("cat").output == ""  # stdin is empty, the shell's own input is not read


def test_shell_state_persists(sb: DockerSandbox) -> None:
    sb.exec("mkdir -p /tmp/state_dir && cd /tmp/state_dir && export MG_FOO='a b'")
    r = sb.exec('pwd; echo "$MG_FOO"')
    assert r.output == "/tmp/state_dir\na b\n"
    sb.exec("cd /")


def test_timeout_kills_command_and_sandbox_stays_usable(sb: DockerSandbox) -> None:
    sb.exec("cd /tmp")
    r = sb.exec("echo started; sleep 60; echo never", timeout=1.0)
    assert r.timed_out and r.exit_code == -1
    assert "started" in r.output and "never" not in r.output
    assert "timed out" in r.output
    after = sb.exec("pwd; cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^sleep$'")
    assert after.output.splitlines()[0] == "/tmp"
    assert after.output.splitlines()[1] == "1"  # only the container's own keep-alive sleep
    sb.exec("cd /")


def test_timeout_of_a_builtin_loop_restarts_the_shell(sb: DockerSandbox) -> None:
    sb.exec("cd /tmp && export MG_KEPT=yes")
    r = sb.exec("while :; do :; done", timeout=1.0)
    assert r.timed_out and "new shell" in r.output
    assert sb.exec('pwd; echo "$MG_KEPT"').output == "/tmp\nyes\n"
    sb.exec("cd /")


def test_exit_starts_a_new_shell(sb: DockerSandbox) -> None:
    sb.exec("cd /tmp")
    r = sb.exec("echo bye; exit 4")
    assert "bye" in r.output and "new one" in r.output
    assert sb.exec("pwd").output == "/tmp\n"
    sb.exec("cd /")


def test_binary_and_non_utf8_output(sb: DockerSandbox) -> None:
    r = sb.exec(r"printf 'ok \377\376 \000 end'")
    assert r.output.startswith("ok ") and r.output.endswith(" end")
    assert "\ufffd" in r.output
    r = sb.exec("head -c 100000 /dev/urandom")
    assert r.exit_code == 0 and len(r.output) > 0


def test_large_output_truncated_with_flat_memory(sb: DockerSandbox) -> None:
    tracemalloc.start()
    try:
        r = sb.exec("head -c 50000000 /dev/zero | tr '\\0' a; echo; echo TAIL", timeout=120)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.exit_code == 0 and r.truncated
    assert r.output.startswith("aaaa") and r.output.rstrip().endswith("TAIL")
    assert "truncated" in r.output and len(r.output) < sb.output_limit + 200
    assert peak < 8_000_000, f"reading 50 MB of output peaked at {peak} bytes of Python memory"


def test_files_round_trip(sb: DockerSandbox, tmp_path: Path) -> None:
    sb.write_file("/tmp/files/a.bin", b"\x00\xffdata")
    assert sb.read_file("/tmp/files/a.bin") == b"\x00\xffdata"
    sb.write_file("/tmp/files/b.txt", "héllo\n")
    assert sb.exec("cat /tmp/files/b.txt").output == "héllo\n"
    with pytest.raises(FileNotFoundError):
        sb.read_file("/tmp/files/missing")
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "m.py").write_text("X = 1\n")
    (src / "top.txt").write_text("top\n")
    sb.put_dir(src, "/tmp/put")
    assert sb.exec("cat /tmp/put/pkg/m.py /tmp/put/top.txt").output == "X = 1\ntop\n"
    sb.get_dir("/tmp/put", tmp_path / "back")
    assert (tmp_path / "back" / "pkg" / "m.py").read_text() == "X = 1\n"


def test_network_isolation(sb: DockerSandbox) -> None:
    assert sb.exec("ls /sys/class/net").output.split() == ["lo"]
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        probe = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
            "    print('CONNECTED')\n"
            "except OSError as e:\n"
            "    print('REFUSED', e)\n"
        )
        r = sb.exec(f"python3 -c {_q(probe)}")
        assert "REFUSED" in r.output and "CONNECTED" not in r.output
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()


def test_security_settings(sb: DockerSandbox) -> None:
    attrs = client().api.inspect_container(sb.id)["HostConfig"]
    assert attrs["NetworkMode"] == "none" and attrs["CapDrop"] == ["ALL"]
    assert attrs["SecurityOpt"] == ["no-new-privileges"]
    assert attrs["PidsLimit"] == 512 and attrs["NanoCpus"] == 1_000_000_000
    labels = client().containers.get(sb.id).labels
    assert labels["mentorgym.owner_pid"] == str(os.getpid())
    assert labels["mentorgym.run"] == RUN_ID
    assert {"mentorgym.owner_host", "mentorgym.created"} <= labels.keys()


def test_fork_bomb_is_held_by_pids_limit(image: str) -> None:
    with DockerSandbox(image, pids_limit=64) as box:
        r = box.exec("bomb() { bomb | bomb & }; bomb; sleep 30", timeout=3.0)
        assert r.timed_out
        assert box.exec("echo alive").output == "alive\n"
        assert box.alive()


def test_memory_hog_is_reported(image: str) -> None:
    with DockerSandbox(image, mem_limit="64m") as box:
        r = box.exec("python3 -c \"b = b'x' * (512 << 20); print(len(b))\"", timeout=60)
        assert r.oom_killed and r.exit_code == 137 and "out of memory" in r.output
        assert box.exec("echo still here").output == "still here\n"
        plain_kill = box.exec("sh -c 'kill -9 $$'")
        assert plain_kill.exit_code == 137 and not plain_kill.oom_killed


def test_container_removed_mid_use_raises(image: str) -> None:
    box = DockerSandbox(image)
    try:
        timer = threading.Timer(0.5, lambda: client().api.remove_container(box.id, force=True))
        timer.start()
        with pytest.raises(SandboxError, match="removed"):
            box.exec("sleep 20", timeout=30)
        timer.join()
        with pytest.raises(SandboxError):
            box.exec("true")
        assert not box.alive()
    finally:
        box.close()
        box.close()  # safe twice


def test_no_container_left_after_exception_in_with(image: str) -> None:
    ids: list[str] = []
    with pytest.raises(RuntimeError):
        with DockerSandbox(image) as box:
            ids.append(box.id)
            raise RuntimeError("boom")
    assert not _exists(ids[0])


def test_close_without_waiting_removes_in_background(image: str) -> None:
    from mentorgym.sandboxes.docker import drain_removals

    box = DockerSandbox(image)
    box.close(wait=False)
    with pytest.raises(SandboxError, match="closed"):
        box.exec("true")
    drain_removals()
    assert not _exists(box.id)


def test_reap_after_sigkill_of_driver(image: str, tmp_path: Path) -> None:
    driver = textwrap.dedent(
        f"""
        import sys, time
        from mentorgym.sandboxes.docker import DockerSandbox
        box = DockerSandbox({image!r})
        print(box.id, flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        container_id = proc.stdout.readline().strip() if proc.stdout else ""
        assert container_id, "the driver subprocess did not start a sandbox"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _exists(container_id)  # SIGKILL runs no cleanup: only reap can help
        assert reap() >= 1
        assert not _exists(container_id)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_reap_spares_live_owners(sb: DockerSandbox) -> None:
    reap()
    assert _exists(sb.id)
    reap(all_runs=True)  # all runs, but never this process's own containers
    assert _exists(sb.id)


def test_pool_never_hands_out_a_used_container(image: str) -> None:
    from mentorgym.sandboxes.pool import SandboxPool

    seen: set[str] = set()
    with SandboxPool(image, size=2) as pool:
        for _ in range(4):
            box = pool.acquire()
            assert box.id not in seen
            seen.add(box.id)
            assert box.exec("echo $((1+1))").output == "2\n"
            box.close()
        deadline = time.monotonic() + 30
        while pool.idle() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        idle_ids = {b.id for b in list(pool._ready.queue)}
        assert idle_ids and not idle_ids & seen
    assert not any(_exists(i) for i in seen | idle_ids)


def test_pool_keeps_at_most_size_idle_after_a_burst(image: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from mentorgym.sandboxes.pool import SandboxPool

    with SandboxPool(image, size=1, fillers=2) as pool:
        with ThreadPoolExecutor(5) as ex:
            boxes = list(ex.map(lambda _: pool.acquire(), range(5)))
        for box in boxes:
            box.close(wait=False)
        deadline = time.monotonic() + 60
        while pool.idle() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(3)  # room for any extra container a filler would (wrongly) start
        assert pool.idle() == 1


def test_get_pool_shares_one_pool_per_key(image: str) -> None:
    from mentorgym.sandboxes.pool import close_all_pools, get_pool

    a = get_pool(image, 1, mem_limit="1g")
    assert get_pool(image, 1, mem_limit="1g") is a
    assert get_pool(image, 1, mem_limit="512m") is not a
    box = a.acquire()
    box.close()
    close_all_pools()
    assert get_pool(image, 1, mem_limit="1g") is not a
    close_all_pools()


def test_build_base_is_cached(image: str) -> None:
    from mentorgym.sandboxes.image import ensure_base

    built = ensure_base(image)
    assert built.cached and built.tag == image


def test_build_repo_image_is_deterministic(image: str, tmp_path: Path) -> None:
    from mentorgym.sandboxes.image import build_repo_image

    repo = tmp_path / "toy"
    repo.mkdir()
    (repo / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (repo / "test_calc.py").write_text(
        "from calc import add\n\ndef test_add():\n    assert add(1, 2) == 3\n"
    )
    tag = build_repo_image(repo, base=image)
    assert build_repo_image(repo, base=image) == tag
    heads = []
    for _ in range(2):
        with DockerSandbox(tag, workdir="/testbed") as box:
            r = box.exec("git rev-parse HEAD && git status --porcelain && python3 -m pytest -q")
            assert r.exit_code == 0, r.output
            heads.append(r.output.split()[0])
    assert heads[0] == heads[1]
    (repo / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    assert build_repo_image(repo, base=image) != tag
    assert not (repo / ".git").exists()  # the caller's directory is left alone


def test_unavailable_engine_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import mentorgym.sandboxes.docker as mod

    monkeypatch.setattr(mod, "_client", None)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    reason = mod.engine_available()
    assert reason is not None
    assert "unix:///nonexistent/docker.sock" in reason and "start dockerd" in reason


def test_no_container_of_this_run_left(image: str) -> None:
    # Runs last in this file: every sandbox the tests above closed is gone.
    left = client().containers.list(all=True, filters={"label": f"mentorgym.run={RUN_ID}"})
    shared = [c for c in left if c.labels.get("mentorgym.owner_pid") == str(os.getpid())]
    assert len(shared) <= 1, [c.id for c in shared]  # only the module's `sb`, still open


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)
