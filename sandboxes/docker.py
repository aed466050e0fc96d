"""Docker sandboxes: one container per episode, with a shell kept open inside it.

What is isolated: the container has no network but loopback (`network_mode="none"`),
every Linux capability dropped, `no-new-privileges`, a memory limit (swap included),
a process-count limit and a CPU quota; it sees its own filesystem and process tree.
What is not: it shares the host kernel (a kernel exploit escapes it), and anyone who
can reach the Docker engine controls it. Run untrusted code on a machine you can lose.

The container's first process is a bash loop that reaps orphans and survives `kill -9 -1`
(the kernel never delivers that to a namespace's init), so no command can stop the
container from inside. Commands see only the image's environment and `env`: nothing of
the parent's environment reaches a container. `read_only`, `user`, `tmpfs` and `volumes` make the
root filesystem read-only, drop root inside the container and give it writable directories
(`volumes`: anonymous volumes filled from the image, which `docker cp` can reach, unlike tmpfs).

Each sandbox talks to the engine through its own client (one connection pool per sandbox):
docker-py keys its pools by URL and evicts the least recently used one, closing it under
a thread still using it, when many sandboxes share one client (`queue.Full`, then
`AttributeError` inside `containers.run`, with 128 sandboxes made from 16 threads). A
failure to create a sandbox is a `SandboxError` naming the cause, and the container it
may have left is removed before the error is raised.

`exec` writes each command to a bash process kept open inside the container, so `cd`
and `export` persist between calls and a round trip costs well under a millisecond
instead of a `docker exec` (~50 ms). A second, idle bash in the container kills what a
timed-out command left running (the command's shell included, which is then restarted
in the same directory with the same exported variables), using only shell builtins so that it works even when a
fork bomb holds every process slot. Every container carries labels naming its owner
process; `reap()` removes those whose owner is gone.
"""

from __future__ import annotations

import atexit
import io
import os
import queue
import secrets
import select
import shlex
import socket
import struct
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType

import docker
import docker.errors
import docker.models.containers
import docker.types
import requests.exceptions

from mentorgym.errors import DockerUnavailableError, SandboxError
from mentorgym.sandboxes.base import DEFAULT_OUTPUT_LIMIT, ExecResult, OutputCollector

LABEL = "mentorgym"
RUN_ID = os.environ.get("MENTORGYM_RUN_ID") or uuid.uuid4().hex[:12]
"""Labels every container this process creates; set MENTORGYM_RUN_ID to name a run."""

_STATE_FILE = "/tmp/.mentorgym_shell_state"

_client: docker.DockerClient | None = None
_client_lock = threading.Lock()
_reaped = False
_reap_lock = threading.Lock()

# The container's first process: reaps every orphan (bash's SIGCHLD handler waits for any
# child) and lives through `kill -9 -1`, which spares a namespace's init.
_PID1 = 'trap "" TERM INT HUP; while :; do sleep 2147483647 & wait; done'


def _engine_address() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def _unavailable_message(reason: object) -> str:
    return (
        f"no Docker engine answered at {_engine_address()}: start dockerd or set DOCKER_HOST "
        f"(scripts/docker_up.sh does both as root) [{reason}]"
    )


def client() -> docker.DockerClient:
    """The process-wide Docker client (honours DOCKER_HOST); raises DockerUnavailableError."""
    global _client
    with _client_lock:
        if _client is None:
            try:
                c = docker.from_env(timeout=120)
                c.ping()
            except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
                raise DockerUnavailableError(_unavailable_message(e)) from None
            _client = c
        return _client


def _sandbox_client() -> docker.DockerClient:
    """A client of its own for one sandbox (its own connection pools; see the module docstring)."""
    shared = client()
    try:
        return docker.from_env(timeout=120, version=shared.api.api_version)
    except docker.errors.DockerException as e:
        raise DockerUnavailableError(_unavailable_message(e)) from None


def engine_available() -> str | None:
    """None when a Docker engine answers, else a sentence saying how to get one."""
    try:
        client()
    except DockerUnavailableError as e:
        return str(e)
    return None


# --- ownership and reaping ----------------------------------------------------------------


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner_labels() -> dict[str, str]:
    """The labels that mark a container as this process's."""
    return {
        LABEL: "1",
        "mentorgym.owner_pid": str(os.getpid()),
        "mentorgym.owner_start": _process_start(os.getpid()) or "",
        "mentorgym.owner_host": socket.gethostname(),
        "mentorgym.run": RUN_ID,
        "mentorgym.created": f"{time.time():.3f}",
    }


def _owner_alive(labels: dict[str, str]) -> bool:
    try:
        pid = int(labels.get("mentorgym.owner_pid", ""))
    except ValueError:
        return False
    start = _process_start(pid)
    if start is None:
        return False
    recorded = labels.get("mentorgym.owner_start")
    return not recorded or recorded == start


def reap(all_runs: bool = False) -> int:
    """Remove mentorgym containers on this host whose owner process is gone; return how many.

    With `all_runs`, remove every mentorgym container from this host except this process's
    own, whether or not its owner still runs.
    """
    c = client()
    host = socket.gethostname()
    me = str(os.getpid())
    removed = 0
    # The low-level listing carries the labels: the high-level one inspects each container
    # afterwards and fails on one that another process removed in between.
    for entry in c.api.containers(all=True, filters={"label": LABEL}):
        labels = entry.get("Labels") or {}
        if labels.get("mentorgym.owner_host") != host:
            continue  # a pid on another host says nothing about this one
        if labels.get("mentorgym.owner_pid") == me and _owner_alive(labels):
            continue
        if not all_runs and _owner_alive(labels):
            continue
        try:
            c.api.remove_container(entry["Id"], force=True)
            removed += 1
        except docker.errors.NotFound:
            pass  # removed concurrently by another reaper
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: its removal is already in progress
                raise
    return removed


def _reap_once() -> None:
    global _reaped
    with _reap_lock:
        if _reaped:
            return
        _reaped = True
        try:
            reap()
        except (docker.errors.APIError, requests.exceptions.RequestException):
            pass  # reaping is hygiene; a failure here must not stop the sandbox being made


# --- the shell protocol ------------------------------------------------------------------


class _Stream:
    """A bash process inside the container, attached by a raw socket (multiplexed frames)."""

    def __init__(self, api: docker.APIClient, container_id: str, argv: list[str], workdir: str):
        self.exec_id = api.exec_create(
            container_id, argv, stdin=True, stdout=True, stderr=True, workdir=workdir
        )["Id"]
        sock = api.exec_start(self.exec_id, socket=True)
        # Keep docker-py's wrapper too: it holds the HTTP response, whose collection by
        # the garbage collector may close the connection under us.
        self._wrapper = sock
        self.sock: socket.socket = getattr(sock, "_sock", sock)
        self.sock.setblocking(True)
        self._poller = select.poll()
        self._poller.register(self.sock, select.POLLIN)
        self._buf = bytearray()
        self._frame_left = 0
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, deadline: float) -> bytes | None:
        """Payload bytes available before `deadline`: b"" on timeout, None at end of stream."""
        while True:
            out = self._take_payload()
            if out:
                return out
            if self.eof:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return b""
            # poll(2), not select(2): select fails on descriptors past 1023, and a process
            # with a hundred sandboxes has those.
            if not self._poller.poll(remaining * 1000):
                return b""
            try:
                chunk = self.sock.recv(1 << 16)
            except (ConnectionError, OSError):
                chunk = b""
            if not chunk:
                self.eof = True
            self._buf += chunk

    def _take_payload(self) -> bytes:
        # Frames: 1 byte stream id, 3 zero bytes, 4 bytes big-endian length, then payload.
        out = bytearray()
        while self._buf:
            if self._frame_left == 0:
                if len(self._buf) < 8:
                    break
                self._frame_left = struct.unpack(">I", self._buf[4:8])[0]
                del self._buf[:8]
                continue
            n = min(self._frame_left, len(self._buf))
            out += self._buf[:n]
            del self._buf[:n]
            self._frame_left -= n
        return bytes(out)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# Runs in the control shell: stop, then kill, every process but the ones to keep, using
# only builtins (a glob over /proc, `read`, `kill`) so that no fork is needed.
_KILLER_FN = r"""
mg_kill() {
  local keep=" 1 $$ $MG_BASE $* " p pid n round
  for round in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    n=0
    for p in /proc/[0-9]*; do
      pid=${p#/proc/}
      case "$keep" in *" $pid "*) continue ;; esac
      kill -STOP "$pid" 2>/dev/null && n=$((n+1))
    done
    [ "$n" -eq 0 ] && break
  done
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    case "$keep" in *" $pid "*) continue ;; esac
    kill -KILL "$pid" 2>/dev/null; kill -CONT "$pid" 2>/dev/null
  done
  printf 'MG_KILLED\n'
}
mg_oom() {
  local line v=0
  if [ -r /sys/fs/cgroup/memory.events ]; then
    while read -r line; do case "$line" in "oom_kill "*) v=${line#oom_kill } ;; esac
    done < /sys/fs/cgroup/memory.events
  elif [ -r /sys/fs/cgroup/memory/memory.oom_control ]; then
    while read -r line; do case "$line" in "oom_kill "*) v=${line#oom_kill } ;; esac
    done < /sys/fs/cgroup/memory/memory.oom_control
  fi
  printf 'MG_OOM %s\n' "$v"
}
[ -n "$MG_BASE" ] || for p in /proc/[0-9]*; do MG_BASE="$MG_BASE ${p#/proc/}"; done
printf 'MG_READY %s\n' "$MG_BASE"
"""


class DockerSandbox:
    """A started container with a persistent bash inside; see the module docstring.

    `exec` never raises for what a command does (non-zero exit, timeout, binary output,
    out of memory); it raises `SandboxError` only when the container itself is gone.
    """

    def __init__(
        self,
        image: str,
        *,
        workdir: str = "/",
        network: bool = False,
        mem_limit: str = "2g",
        pids_limit: int = 512,
        cpus: float = 1.0,
        env: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        user: str | None = None,
        read_only: bool = False,
        tmpfs: dict[str, str] | None = None,
        volumes: list[str] | None = None,
        background_close: bool = False,
    ):
        _reap_once()
        c = _sandbox_client()
        self.image = image
        self.workdir = workdir
        self.mem_limit = mem_limit
        self.output_limit = output_limit
        self._lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._closed = False
        self._background_close = background_close
        self._shell: _Stream | None = None
        self._control: _Stream | None = None
        self._shell_pid = ""
        self._base_pids = ""
        self._oom_seen = 0
        self._nonce = secrets.token_hex(6)
        self._count = 0
        self._client = c
        sandbox_label = {"mentorgym.sandbox": uuid.uuid4().hex}
        try:
            self.container = c.containers.run(
                image,
                **_run_options(
                    workdir, network, mem_limit, pids_limit, cpus, env or {},
                    {**owner_labels(), **(labels or {}), **sandbox_label},
                    user or "", read_only, tmpfs or {}, volumes or [],
                ),
            )  # fmt: skip
        except docker.errors.ImageNotFound:
            self._discard(sandbox_label)
            raise SandboxError(
                f"image {image} does not exist: build the base image with "
                "`mentorgym sandbox build-base` (or scripts/docker_up.sh)"
            ) from None
        except Exception as e:  # whatever docker-py or requests raise: named, never leaked
            self._discard(sandbox_label)
            raise SandboxError(
                f"could not start a container from {image}: {type(e).__name__}: {e}"
            ) from None
        self.id: str = self.container.id
        try:
            self._control = self._start_control()
            self._shell = self._start_shell()
        except SandboxError:
            self.close()
            raise
        except Exception as e:
            self.close()
            raise SandboxError(
                f"container {self.id[:12]} started but its shell did not: {type(e).__name__}: {e}"
            ) from None
        except BaseException:
            self.close()
            raise
        # The shells talk over their own sockets now; drop the client's idle pooled
        # connections (a few per sandbox), so a hundred sandboxes hold a few hundred
        # descriptors, not a thousand. The client opens new ones when it needs them.
        self._client.api.close()

    def _discard(self, sandbox_label: dict[str, str]) -> None:
        """Remove a container a failed `containers.run` may have created, then the client."""
        try:
            for leftover in client().containers.list(
                all=True, filters={"label": [f"{k}={v}" for k, v in sandbox_label.items()]}
            ):
                _remove(leftover)
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            pass  # the engine is gone; reap() removes it when it returns
        self._closed = True
        self._close_client()

    def _close_client(self) -> None:
        try:
            self._client.close()
        except Exception:
            pass

    # --- shells ------------------------------------------------------------------------

    def _start_control(self) -> _Stream:
        stream = _Stream(self.container.client.api, self.id, ["bash", "--norc", "-s"], "/")
        # The processes alive before any command ran (init, `sleep`) are never killed; a
        # restarted control shell inherits the list its first incarnation took.
        stream.send(f"MG_BASE={shlex.quote(self._base_pids)}\n".encode() + _KILLER_FN.encode())
        self._base_pids = self._expect(stream, b"MG_READY ", 20.0)[len(b"MG_READY ") :].decode()
        return stream

    def _start_shell(self) -> _Stream:
        """Start the command shell, restoring cwd and exports saved after the last command."""
        stream = _Stream(self.container.client.api, self.id, ["bash", "--norc", "-s"], "/")
        restore = f"[ -r {_STATE_FILE} ] && . {_STATE_FILE} 2>/dev/null\n" if self._count else ""
        cd = f"cd {shlex.quote(self.workdir)} 2>/dev/null\n" if not self._count else ""
        stream.send(f"exec 2>&1\n{cd}{restore}printf 'MG_READY %s\\n' \"$$\"\n".encode())
        line = self._expect(stream, b"MG_READY ", 20.0)
        self._shell_pid = line.split()[-1].decode()
        return stream

    def _expect(self, stream: _Stream, prefix: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        buf = b""
        while True:
            idx = buf.find(prefix)
            if idx >= 0 and b"\n" in buf[idx:]:
                return buf[idx:].split(b"\n", 1)[0]
            chunk = stream.read(deadline)
            if chunk is None:
                raise SandboxError(self._death_reason("a shell in the container exited"))
            if chunk == b"":
                raise SandboxError(
                    f"a shell in container {self.id[:12]} did not answer within {timeout:.0f} s"
                )
            buf += chunk

    # --- the Sandbox protocol --------------------------------------------------------------

    def exec(self, cmd: str, timeout: float = 30.0) -> ExecResult:
        """Run `cmd` in the persistent shell (stdout and stderr interleaved, stdin empty)."""
        with self._lock:
            if self._closed:
                raise SandboxError("this sandbox is closed; create a new one")
            if self._shell is None or self._shell.eof:
                self._shell = self._restart_shell()
            self._count += 1
            marker = f"__MG_{self._nonce}_{self._count}__ ".encode()
            # Braces keep the command in this shell (so cd/export persist) while the
            # redirections apply only to it; the state file lets a restarted shell resume.
            script = (
                f"{{ eval {shlex.quote(cmd)}\n}} </dev/null; __mg_rc=$?; "
                f"{{ printf 'cd %q\\n' \"$PWD\"; export -p; }} >{_STATE_FILE} 2>/dev/null; "
                f"printf '\\n%s%d\\n' '{marker.decode()}' \"$__mg_rc\"\n"
            )
            try:
                self._shell.send(script.encode())
            except OSError:
                # The stream to the shell broke but the container may be fine: resume in a
                # new shell (the state file restores the directory and exports) and resend.
                if not self._container_running():
                    raise SandboxError(self._death_reason("the shell's connection broke")) from None
                self._shell.close()
                self._shell = self._restart_shell()
                try:
                    self._shell.send(script.encode())
                except OSError:
                    raise SandboxError(
                        self._death_reason("the shell's connection broke twice")
                    ) from None
            return self._collect(marker, timeout)

    def _collect(self, marker: bytes, timeout: float) -> ExecResult:
        assert self._shell is not None
        out = OutputCollector(self.output_limit)
        pending = bytearray()
        keep = len(marker) + 24  # enough to hold a marker line split across reads
        deadline = time.monotonic() + timeout
        while True:
            chunk = self._shell.read(deadline)
            if chunk is None:  # the shell exited: `exit`, a kill, or the container died
                out.add(bytes(pending))
                if not self._container_running():
                    raise SandboxError(self._death_reason("the container stopped"))
                self._shell = self._restart_shell()
                text, truncated = out.text()
                note = "\n[the shell exited; a new one was started in the last directory]"
                return ExecResult(0, text + note, False, truncated)
            if chunk == b"":
                # Kill the command with the shell that runs it, so the rest of its list
                # (`sleep 99; rm -rf x`) never runs, then resume in a fresh shell from the
                # directory and exports saved after the previous command.
                if not self._container_running():
                    raise SandboxError(self._death_reason("the container stopped"))
                out.add(bytes(pending))
                self._kill_all(keep_shell=False)
                self._shell.close()
                self._shell = self._restart_shell()
                text, truncated = out.text()
                notice = (
                    f"\n[timed out after {timeout:g} s: the command was killed; a new shell "
                    "started with the directory and exported variables of the previous command]"
                )
                return ExecResult(-1, text + notice, True, truncated)
            pending += chunk
            idx = pending.find(b"\n" + marker)
            if idx >= 0 and pending.find(b"\n", idx + 1 + len(marker)) >= 0:
                out.add(bytes(pending[:idx]))
                end = pending.index(b"\n", idx + 1 + len(marker))
                code = int(pending[idx + 1 + len(marker) : end])
                break
            if len(pending) > keep:
                out.add(bytes(pending[:-keep]))
                del pending[:-keep]
        text, truncated = out.text()
        oom = False
        notice = ""
        if code == 137 and self._oom_kills() > self._oom_seen:
            self._oom_seen = self._oom_kills()
            oom = True
            notice = f"\n[killed: out of memory (the sandbox's limit is {self.mem_limit})]"
        return ExecResult(code, text + notice, False, truncated, oom)

    def _restart_shell(self) -> _Stream:
        try:
            return self._start_shell()
        except (docker.errors.APIError, OSError) as e:
            raise SandboxError(self._death_reason(f"a new shell could not start ({e})")) from None

    def _control_shell(self) -> _Stream:
        if self._control is None or self._control.eof:
            # A command killed the control shell (pkill bash, kill -1): start another.
            self._control = self._start_control()
        return self._control

    def _kill_all(self, keep_shell: bool) -> None:
        """Kill every process in the container except init, `sleep`, the shells we keep."""
        try:
            control = self._control_shell()
            control.send(f"mg_kill {self._shell_pid if keep_shell else ''}\n".encode())
            self._expect(control, b"MG_KILLED", 10.0)
        except (SandboxError, OSError, docker.errors.APIError):
            if not self._container_running():
                raise SandboxError(self._death_reason("the container stopped")) from None
            raise

    def _oom_kills(self) -> int:
        try:
            control = self._control_shell()
            control.send(b"mg_oom\n")
            return int(self._expect(control, b"MG_OOM ", 5.0).split()[-1] or 0)
        except (SandboxError, OSError, ValueError, docker.errors.APIError):
            return 0

    def _container_running(self) -> bool:
        try:
            self.container.reload()
        except docker.errors.NotFound:
            return False
        except (docker.errors.APIError, requests.exceptions.RequestException):
            return False
        return self.container.status == "running"

    def _death_reason(self, what: str, settle_s: float = 3.0) -> str:
        # The shell's stream can close a moment before the engine updates the
        # container's state (a forced removal kills processes first), so give
        # the state a few seconds to settle before calling the container alive.
        deadline = time.monotonic() + settle_s
        while True:
            try:
                self.container.reload()
            except docker.errors.NotFound:
                return f"{what}: container {self.id[:12]} was removed (from outside this sandbox)"
            except (docker.errors.APIError, requests.exceptions.RequestException) as e:
                return f"{what}: the Docker engine stopped answering ({e})"
            state = self.container.attrs.get("State", {})
            if state.get("Status") != "running" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if state.get("Status") in ("removing", "dead"):
            return f"{what}: container {self.id[:12]} was removed (from outside this sandbox)"
        if state.get("OOMKilled"):
            return f"{what}: container {self.id[:12]} was killed for memory ({self.mem_limit})"
        if state.get("Status") != "running":
            return (
                f"{what}: container {self.id[:12]} is {state.get('Status')} "
                f"(exit code {state.get('ExitCode')}; every process in it was killed)"
            )
        return f"{what} (container {self.id[:12]} is still running)"

    def alive(self) -> bool:
        """Whether the container still runs and this sandbox is open."""
        return not self._closed and self._container_running()

    def read_file(self, path: str) -> bytes:
        """The bytes of a file in the container; raises FileNotFoundError when it is absent."""
        self._check_open()
        try:
            stream, _ = self.container.get_archive(path)
        except docker.errors.NotFound:
            if not self._container_running():
                raise SandboxError(self._death_reason("read_file failed")) from None
            raise FileNotFoundError(f"{path} does not exist in the sandbox") from None
        data = io.BytesIO(b"".join(stream))
        with tarfile.open(fileobj=data) as tar:
            member = tar.next()
            if member is None or not member.isfile():
                raise IsADirectoryError(f"{path} is not a regular file in the sandbox")
            f = tar.extractfile(member)
            assert f is not None
            return f.read()

    def write_file(self, path: str, content: str | bytes) -> None:
        """Write `content` to `path` (parents created), owned by root, mode 0644."""
        self._check_open()
        data = content.encode() if isinstance(content, str) else content
        parent, name = os.path.split(path.rstrip("/"))
        if not name:
            raise ValueError(f"write_file needs a file path, got {path!r}")
        if not parent.startswith("/"):
            parent = os.path.join(self.workdir, parent)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
        self._put_archive(parent, buf.getvalue())

    def put_dir(self, local_dir: str | Path, container_dir: str) -> None:
        """Copy the contents of `local_dir` into `container_dir` (created if missing)."""
        self._check_open()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for entry in sorted(Path(local_dir).iterdir()):
                tar.add(str(entry), arcname=entry.name, filter=_root_owned)
        self._put_archive(container_dir, buf.getvalue())

    def get_dir(self, container_dir: str, local_dir: str | Path) -> None:
        """Copy the contents of `container_dir` into `local_dir` (created if missing)."""
        self._check_open()
        try:
            stream, _ = self.container.get_archive(container_dir.rstrip("/") + "/.")
        except docker.errors.NotFound:
            raise FileNotFoundError(f"{container_dir} does not exist in the sandbox") from None
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile() as f:
            for block in stream:
                f.write(block)
            f.seek(0)
            with tarfile.open(fileobj=f) as tar:
                tar.extractall(local_dir, filter="data")

    def _put_archive(self, parent: str, data: bytes) -> None:
        try:
            ok = self.container.put_archive(parent, data)
        except docker.errors.NotFound:
            if not self._container_running():
                raise SandboxError(self._death_reason("writing failed")) from None
            mk = self.exec(f"mkdir -p {shlex.quote(parent)}", timeout=10)
            if mk.exit_code != 0:
                raise OSError(f"cannot create {parent} in the sandbox: {mk.output}") from None
            ok = self.container.put_archive(parent, data)
        if not ok:
            raise OSError(f"copying into {parent} in the sandbox failed")

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError("this sandbox is closed; create a new one")

    def close(self, wait: bool | None = None) -> None:
        """Kill and remove the container; safe twice and from a `finally`.

        With `wait=False` the removal happens on a background thread and close returns at
        once (an episode loop need not wait for the engine); `drain_removals()` and exit
        wait for those, and `reap()` catches any that a SIGKILL interrupted. The default
        is `not background_close` (a constructor argument), for callers that only know
        the Sandbox protocol's `close()`.
        """
        if wait is None:
            wait = not self._background_close
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for stream in (self._shell, self._control):
            if stream is not None:
                stream.close()
        container = getattr(self, "container", None)
        if container is None:
            self._close_client()
            return
        if wait:
            _remove(container)
            self._close_client()
        else:
            _removals.put(container)  # the remover uses, then closes, this sandbox's client
            _start_remover()

    def __enter__(self) -> DockerSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A sandbox dropped without close() must not leave its container running.
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass


def _run_options(
    workdir: str, network: bool, mem_limit: str, pids_limit: int, cpus: float,
    env: dict[str, str], labels: dict[str, str], user: str, read_only: bool,
    tmpfs: dict[str, str], volumes: list[str],
) -> dict[str, object]:  # fmt: skip
    """`containers.run` options for a sandbox container (see the module docstring)."""
    return {
        "command": ["bash", "-c", _PID1],
        "detach": True,
        "working_dir": workdir,
        "network_mode": "bridge" if network else "none",
        "mem_limit": mem_limit,
        "memswap_limit": mem_limit,
        "pids_limit": pids_limit,
        "nano_cpus": int(cpus * 1e9),
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "environment": env,
        "labels": labels,
        "user": user,
        "read_only": read_only,
        "tmpfs": tmpfs,
        # anonymous volumes, filled from the image's content at that path and removed with
        # the container: writable places under a read-only root
        "mounts": [docker.types.Mount(p, None, type="volume") for p in volumes],
    }


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Files must be root's: with every capability dropped, root in the container cannot
    # write files that another uid owns.
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _remove(container: docker.models.containers.Container) -> None:
    try:
        # Force-remove kills at once; a graceful stop waits 10 s on a PID 1 that
        # ignores SIGTERM, and a sandbox holds nothing worth a clean shutdown.
        container.remove(force=True, v=True)  # v: its anonymous volumes too
    except docker.errors.NotFound:
        pass
    except (docker.errors.APIError, requests.exceptions.RequestException):
        pass  # the engine is gone; reap() removes the container when it returns


_removals: queue.Queue[docker.models.containers.Container] = queue.Queue()
_remover: threading.Thread | None = None


def _start_remover() -> None:
    global _remover
    with _client_lock:
        if _remover is None or not _remover.is_alive():
            _remover = threading.Thread(target=_remove_loop, name="mentorgym-remover", daemon=True)
            _remover.start()


def _remove_loop() -> None:
    while True:
        container = _removals.get()
        try:
            _remove(container)
            container.client.close()
        except Exception:
            pass  # a failed removal is reap()'s to finish; the remover must keep running
        finally:
            _removals.task_done()


def drain_removals() -> None:
    """Wait until every `close(wait=False)` removal has finished."""
    _removals.join()


@atexit.register
def _close_client() -> None:
    drain_removals()
    if _client is not None:
        try:
            _client.close()
        except Exception:
            pass
