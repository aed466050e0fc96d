"""The isolation probes: what agent code must not reach, tried against every sandbox backend.

Each probe is one test, parametrized over the backends it applies to: `bwrap` and `docker`
(as MathTools builds them by default) always, `local` only where LocalSandbox promises
something (a clean environment, its limits). Then the probes run again through the
MathTools env with trajectory files written, and through the SWE env's bash tool.
Backends that cannot run here skip with the reason; the test command installs both.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from mentorgym.envs.base import format_tool_call
from mentorgym.sandboxes.base import Sandbox
from mentorgym.sandboxes.bwrap import BwrapSandbox, bwrap_available
from mentorgym.sandboxes.choice import _docker_reason, choose
from mentorgym.sandboxes.docker import engine_available

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BWRAP_REASON = bwrap_available()
DOCKER_REASON = engine_available() or _docker_reason("mentorgym/base:latest")
ROOT = os.getuid() == 0
REPO = Path(__file__).resolve().parents[1]

BACKENDS = [
    pytest.param("local", id="local"),
    pytest.param(
        "bwrap",
        id="bwrap",
        marks=pytest.mark.skipif(BWRAP_REASON is not None, reason=BWRAP_REASON or ""),
    ),
    pytest.param(
        "docker",
        id="docker",
        marks=[
            pytest.mark.docker,
            pytest.mark.skipif(DOCKER_REASON is not None, reason=DOCKER_REASON or ""),
        ],
    ),
]
ISOLATED = BACKENDS[1:]


def make_sandbox(backend: str) -> Sandbox:
    """The sandbox MathTools would use for `backend` (the production settings)."""
    return choose(backend).factory()


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    box = make_sandbox(request.param)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def host_service() -> Iterator[tuple[int, str]]:
    """A TCP service on the host's 127.0.0.1 that sends a token to whoever connects."""
    token = "SERVICE-" + secrets.token_hex(8)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(token.encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1], token
    stop.set()
    thread.join(timeout=5)
    srv.close()


def connect_code(port: int) -> str:
    return textwrap.dedent(f"""\
        import socket
        try:
            s = socket.create_connection(("127.0.0.1", {port}), timeout=3)
            print("CONNECTED", s.recv(100).decode())
        except OSError as e:
            print("BLOCKED", type(e).__name__)
        """)


def py(code: str) -> str:
    """A shell command running `code` with python3 (as the math tool does)."""
    return "python3 -c " + "'" + code.replace("'", "'\"'\"'") + "'"


# --- probes on the sandboxes themselves ----------------------------------------------------


@pytest.mark.parametrize("sandbox", ISOLATED, indirect=True)
def test_host_canary_file_is_unreadable(sandbox: Sandbox, tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    secret = "CANARY-FILE-" + secrets.token_hex(8)
    canary.write_text(secret)
    canary.chmod(0o644)  # readable by anyone who can reach it: only the mount hides it
    out = sandbox.exec(
        f"cat {canary}; ls {tmp_path}; ls {REPO}; cat {REPO / 'README.md'} | head -3; "
        f"cat /proc/1/environ; ls /root /home",
        timeout=20,
    ).output
    assert secret not in out
    assert "canary.txt" not in out.split()  # a listing line, not an error naming the path
    readme_title = (REPO / "README.md").read_text().splitlines()[0]
    assert readme_title not in out and "pyproject.toml" not in out  # the project is not there


@pytest.mark.parametrize("backend", BACKENDS)
def test_trainer_secret_is_not_in_the_environment(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-CANARY-" + secrets.token_hex(12)
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    box = make_sandbox(backend)  # made after the secret is set
    try:
        # LocalSandbox promises a clean environment only: its commands can read the
        # trainer's /proc/PID/environ like any file of this user (SECURITY.md says so).
        procs = "" if backend == "local" else "cat /proc/$PPID/environ /proc/1/environ; "
        out = box.exec(
            "env; cat /proc/self/environ; " + procs + py("import os; print(dict(os.environ))"),
            timeout=20,
        )
        assert secret not in out.output
        assert "HOME=" in out.output and "PATH=" in out.output
    finally:
        box.close()


@pytest.mark.parametrize("sandbox", ISOLATED, indirect=True)
def test_writes_outside_the_work_directory_fail(sandbox: Sandbox, tmp_path: Path) -> None:
    host_target = tmp_path / "written-by-agent"
    targets = ["/etc/mg_probe", "/usr/mg_probe", "/mg_probe", "/bin/mg_probe", str(host_target)]
    cmd = "; ".join(f"echo x > {t} && echo WROTE {t}" for t in targets)
    out = sandbox.exec(cmd + "; echo fine > inside.txt && cat inside.txt", timeout=20).output
    assert "WROTE" not in out
    assert not host_target.exists()
    assert "fine" in out  # the work directory itself is writable


@pytest.mark.parametrize("sandbox", ISOLATED, indirect=True)
def test_host_loopback_service_is_unreachable(
    sandbox: Sandbox, host_service: tuple[int, str]
) -> None:
    port, token = host_service
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:  # it does answer
        assert s.recv(100).decode() == token
    out = sandbox.exec(py(connect_code(port)), timeout=20).output
    assert token not in out and "CONNECTED" not in out
    assert "BLOCKED" in out


@pytest.mark.parametrize("sandbox", ISOLATED, indirect=True)
def test_fork_bomb_ends_and_the_next_call_works(sandbox: Sandbox) -> None:
    r = sandbox.exec("bomb() { bomb | bomb & }; bomb; sleep 30", timeout=5)
    assert r.timed_out or r.exit_code != 0
    assert sandbox.exec("echo alive", timeout=30).output.strip().endswith("alive")


@pytest.mark.parametrize("sandbox", BACKENDS, indirect=True)
def test_memory_hog_ends_and_the_next_call_works(sandbox: Sandbox) -> None:
    r = sandbox.exec(py("x = bytearray(4 * 1024**3); print('ALLOCATED')"), timeout=60)
    assert not r.timed_out and r.exit_code != 0
    assert "ALLOCATED" not in r.output.splitlines()  # bash may echo the command line
    assert "MemoryError" in r.output or r.oom_killed
    assert sandbox.exec("echo alive", timeout=30).output.strip().endswith("alive")


@pytest.mark.parametrize("sandbox", BACKENDS, indirect=True)
def test_endless_loop_times_out_and_the_next_call_works(sandbox: Sandbox) -> None:
    r = sandbox.exec(py("while True: pass"), timeout=2)
    assert r.timed_out and r.exit_code == -1
    assert sandbox.exec("echo alive", timeout=30).output.strip().endswith("alive")


@pytest.mark.skipif(BWRAP_REASON is not None, reason=BWRAP_REASON or "")
def test_bwrap_cpu_time_limit_ends_a_loop_before_its_timeout() -> None:
    with BwrapSandbox(cpu_seconds=1) as box:
        r = box.exec(py("while True: pass"), timeout=60)
        assert not r.timed_out and r.exit_code != 0  # SIGXCPU / SIGKILL at 1 s of CPU
        assert box.exec("echo alive").output.strip() == "alive"


@pytest.mark.parametrize("sandbox", ISOLATED, indirect=True)
@pytest.mark.parametrize("kill", ["kill -9 -1", "/bin/kill -9 -1", "kill -9 -1 & wait"])
def test_kill_all_does_not_leave_the_sandbox_dead(sandbox: Sandbox, kill: str) -> None:
    sandbox.exec(kill, timeout=20)
    assert sandbox.exec("echo alive", timeout=30).output.strip().endswith("alive")
    assert sandbox.alive()  # type: ignore[attr-defined]
    # And again: the new shell is as killable and as recoverable as the first.
    sandbox.exec("/bin/kill -9 -1", timeout=20)
    assert sandbox.exec("echo again", timeout=30).output.strip().endswith("again")


# --- bubblewrap leaves nothing behind -----------------------------------------------------

_LEAVE_BEHIND = "sleep 1000 & (setsid sleep 1001 &); nohup sleep 1002 >/dev/null 2>&1 & echo ok"


def sandbox_processes(bwrap_pid: int) -> list[psutil.Process]:
    procs = psutil.Process(bwrap_pid).children(recursive=True)
    assert len(procs) >= 4, procs  # init, shell, three sleeps: the probe sees them
    return procs


def _alive(p: psutil.Process) -> bool:
    """Running and not a zombie; a process that exits between the two questions is gone."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_gone(procs: list[psutil.Process], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        alive = [p for p in procs if _alive(p)]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not alive, [p.cmdline() for p in alive]


bwrap_only = pytest.mark.skipif(BWRAP_REASON is not None, reason=BWRAP_REASON or "")


@bwrap_only
def test_bwrap_leaves_no_process_after_close() -> None:
    box = BwrapSandbox()
    assert box.exec(_LEAVE_BEHIND).output.strip() == "ok"
    procs = sandbox_processes(box._proc.pid)  # type: ignore[union-attr]
    box.close()
    assert_gone(procs)
    box.close()  # twice is fine


@bwrap_only
def test_bwrap_leaves_no_process_after_an_exception() -> None:
    procs: list[psutil.Process] = []
    with pytest.raises(RuntimeError, match="boom"):
        with BwrapSandbox() as box:
            box.exec(_LEAVE_BEHIND)
            procs = sandbox_processes(box._proc.pid)  # type: ignore[union-attr]
            raise RuntimeError("boom")
    assert_gone(procs)


@bwrap_only
def test_bwrap_leaves_no_process_after_the_driver_is_killed() -> None:
    driver = textwrap.dedent(f"""\
        import time
        from mentorgym.sandboxes.bwrap import BwrapSandbox
        box = BwrapSandbox()
        box.exec({_LEAVE_BEHIND!r})
        print(box._proc.pid, flush=True)
        time.sleep(600)
        """)
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        procs = [psutil.Process(pid), *sandbox_processes(pid)]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert_gone(procs)
    finally:
        if proc.poll() is None:
            proc.kill()


@bwrap_only
def test_bwrap_host_side_file_access_stays_in_the_work_directory(tmp_path: Path) -> None:
    outside = tmp_path / "host.txt"
    outside.write_text("host")
    with BwrapSandbox() as box:
        box.write_file("a/b.txt", "from the host")
        assert box.read_file("/sandbox/a/b.txt") == b"from the host"
        assert box.exec("echo more >> a/b.txt && cat a/b.txt").output == "from the host" + "more\n"
        # The sandbox plants symlinks to the host's files (their targets exist only there).
        box.exec(f"ln -s {outside} evil; ln -s {tmp_path} dir; ln -s /etc etc")
        for bad in ("evil", "dir/host.txt", "etc/passwd"):
            with pytest.raises(OSError):
                box.read_file(bad)
        with pytest.raises(OSError):
            box.write_file("evil", "overwritten")
        with pytest.raises(OSError):
            box.write_file("dir/new.txt", "x")
        for bad in ("../escape.txt", "/etc/passwd"):
            with pytest.raises(ValueError):
                box.read_file(bad)
    assert outside.read_text() == "host" and not (tmp_path / "new.txt").exists()


@bwrap_only
def test_bwrap_outlives_the_thread_that_made_it() -> None:
    # --die-with-parent follows the thread that forked bwrap; a rollout worker thread
    # that ends must not take the episode's shell (and its exported variables) with it.
    made: list[BwrapSandbox] = []

    def work() -> None:
        box = BwrapSandbox()
        box.exec("export KEPT=yes")
        made.append(box)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    time.sleep(0.2)
    with made[0] as box:
        assert box.exec("echo $KEPT").output.strip() == "yes"


# --- through the MathTools env, with trajectory files ----------------------------------------

PROBES = ["file", "secret", "write", "network"]


def math_tools_probe(
    backend: str,
    probe: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    host_service: tuple[int, str],
) -> dict[str, Any]:
    """Run one probe through the MathTools env's python tool on `backend`, with the
    trajectory file written: the tool's reply, the file's text and the canaries."""
    from mentorgym.agents.rollout import run
    from mentorgym.agents.scripted import ReplayPolicy

    secret = "sk-CANARY-" + secrets.token_hex(12)
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    canary = tmp_path / "gold_answers.jsonl"
    canary.write_text(secret)
    canary.chmod(0o644)
    host_target = tmp_path / "written-by-agent"
    port, token = host_service
    code = {
        "file": f"print(open({str(canary)!r}).read())",
        "secret": "import os; print({k: v for k, v in os.environ.items()})",
        "write": f"open({str(host_target)!r}, 'w').write('x'); print('WROTE')",
        "network": connect_code(port),
    }[probe]
    actions = [format_tool_call("python", {"code": code}), "<answer>0</answer>"]
    replay = tmp_path / "actions.json"
    replay.write_text(json.dumps(actions))
    out = tmp_path / "trajectories.jsonl"
    trajs = run(
        "mentorgym/MathTools-v0",
        ReplayPolicy(replay),
        n=1,
        env_kwargs={"sandbox": backend},
        out=out,
        concurrency=1,
    )
    assert trajs[0].turns[0].info["sandbox"] == backend
    return {
        "reply": trajs[0].turns[1].observation[0]["content"],
        "written": out.read_text(),
        "secret": secret,
        "token": token,
        "host_target": host_target,
    }


@pytest.mark.parametrize("backend", ISOLATED)
@pytest.mark.parametrize("probe", PROBES)
def test_math_tools_probe(
    backend: str,
    probe: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    host_service: tuple[int, str],
) -> None:
    got = math_tools_probe(backend, probe, tmp_path, monkeypatch, host_service)
    reply = got["reply"]
    assert got["secret"] not in got["written"] and got["token"] not in got["written"]
    assert "CONNECTED" not in reply and "WROTE" not in reply and not got["host_target"].exists()
    assert reply.strip(), "the tool answered something (an error is fine)"
    if probe == "secret":  # the code ran: it printed the sandbox's own environment
        assert "'PATH'" in reply


@pytest.mark.parametrize("probe", PROBES)
def test_math_tools_probe_positive_control(
    probe: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    host_service: tuple[int, str],
) -> None:
    """The same probe where the capability IS allowed (`sandbox: local`, this user's own
    process: it reaches the host's files and loopback) must succeed, so a probe that passes
    on an isolated backend passes because the backend stopped it, not because the tool or
    the probe broke. Secrets stay out even here: LocalSandbox promises a clean environment,
    so the control is that the code ran and printed the environment it has."""
    got = math_tools_probe("local", probe, tmp_path, monkeypatch, host_service)
    reply = got["reply"]
    if probe == "file":
        assert got["secret"] in reply
    elif probe == "secret":
        assert "'PATH'" in reply and got["secret"] not in reply
    elif probe == "write":
        assert "WROTE" in reply and got["host_target"].read_text() == "x"
    else:
        assert "CONNECTED" in reply and got["token"] in reply


def test_math_tools_default_is_isolated() -> None:
    import gymnasium

    if BWRAP_REASON is not None and DOCKER_REASON is not None:
        pytest.skip("neither Docker nor bubblewrap is available here")
    env = gymnasium.make("mentorgym/MathTools-v0")
    try:
        assert env.unwrapped.sandbox_backend == ("docker" if DOCKER_REASON is None else "bwrap")
    finally:
        env.close()


def test_math_tools_refuses_without_an_isolated_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from mentorgym.errors import SandboxError
    from mentorgym.sandboxes import bwrap, choice

    monkeypatch.setattr(choice, "_docker_reason", lambda image: "no engine (test)")
    monkeypatch.setattr(bwrap, "bwrap_available", lambda: "no bwrap (test)")
    monkeypatch.setattr(choice, "_cache", {})
    with pytest.raises(SandboxError) as e:
        choose("auto")
    assert "Docker" in str(e.value) and "bubblewrap" in str(e.value)
    assert "no engine (test)" in str(e.value) and "sandbox=local" in str(e.value)


# --- through the SWE env's bash tool (Docker) ----------------------------------------------


@pytest.fixture(scope="module")
def swe_env() -> Iterator[object]:
    if DOCKER_REASON is not None:
        pytest.skip(DOCKER_REASON)
    from mentorgym.envs.swe import SWEEnv
    from mentorgym.envs.swe.tasks import load_tasks

    env = SWEEnv(tasks=load_tasks("builtin")[:1], pool_size=1, command_timeout=20)
    yield env
    env.close()


def swe_bash(env: object, command: str) -> str:
    env.reset(options={"index": 0})  # type: ignore[attr-defined]
    messages, *_ = env.step(format_tool_call("bash", {"command": command}))  # type: ignore[attr-defined]
    return "\n".join(m["content"] for m in messages)


SWE_PROBES = ["file", "secret", "write-host", "network", "kill"]


@pytest.mark.docker
@pytest.mark.parametrize("probe", SWE_PROBES)
def test_swe_probe(
    swe_env: object,
    probe: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    host_service: tuple[int, str],
) -> None:
    secret = "sk-CANARY-" + secrets.token_hex(12)
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    canary = tmp_path / "canary.txt"
    canary.write_text(secret)
    canary.chmod(0o644)
    port, token = host_service
    host_target = tmp_path / "written-by-agent"
    command = {
        "file": f"cat {canary}; ls {REPO}",
        "secret": "env; cat /proc/1/environ /proc/$PPID/environ",
        "write-host": f"echo x > {host_target} && echo WROTE",
        "network": py(connect_code(port)),
        "kill": "kill -9 -1; /bin/kill -9 -1",
    }[probe]
    reply = swe_bash(swe_env, command)
    assert secret not in reply and token not in reply
    assert "WROTE" not in reply and "CONNECTED" not in reply and not host_target.exists()
    if probe == "kill":
        assert "alive" in swe_bash(swe_env, "echo alive")
    # The positive control: the same probe aimed where it IS allowed (inside the container)
    # succeeds, so the tool ran and the probe's own check works.
    control = {
        "file": "echo inside-canary > /tmp/c.txt; cat /tmp/c.txt; ls /testbed",
        "secret": "export MG_CONTROL=visible; env; cat /proc/self/environ",
        "write-host": "echo x > /tmp/mg_probe && echo WROTE",
        "network": py(
            "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1); "
            "c = socket.create_connection(s.getsockname(), timeout=3); print('CONNECTED')"
        ),
        "kill": "sleep 100 & kill -9 $! && echo KILLED",
    }[probe]
    expected = {
        "file": "inside-canary",
        "secret": "MG_CONTROL=visible",
        "write-host": "WROTE",
        "network": "CONNECTED",
        "kill": "KILLED",
    }[probe]
    assert expected in swe_bash(swe_env, control)


@pytest.mark.docker
def test_swe_writes_outside_testbed_fail(swe_env: object) -> None:
    reply = swe_bash(swe_env, "echo x > /etc/mg_probe && echo WROTE")
    assert "WROTE" not in reply
    # the repository and the scratch directory stay writable
    assert "OK" in swe_bash(swe_env, "echo x > /tmp/s && echo x > /testbed/s.txt && echo OK")


@pytest.mark.parametrize("backend", ISOLATED)
def test_sandboxes_work_with_descriptors_past_1023(backend: str) -> None:
    # A trainer with a hundred sandboxes holds descriptors past select(2)'s limit of 1024.
    import resource

    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1400:
        pytest.skip("RLIMIT_NOFILE is below 1400 here")
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        box = make_sandbox(backend)
        try:
            assert box.exec("echo high").output.strip() == "high"
        finally:
            box.close()
    finally:
        for fd in filler:
            os.close(fd)


@pytest.mark.docker
@pytest.mark.skipif(DOCKER_REASON is not None, reason=DOCKER_REASON or "")
def test_docker_choice_survives_its_pool_being_closed() -> None:
    from mentorgym.sandboxes.pool import close_all_pools

    chosen = choose("docker")
    close_all_pools()  # what exit, or a test's teardown, does
    box = chosen.factory()
    try:
        assert box.exec("echo ok").output.strip() == "ok"
    finally:
        box.close()
