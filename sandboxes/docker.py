"""Docker sandboxes: one container per episode, with a shell kept open inside it.

What is isolated: the container has no network but loopback (`network_mode="none"`),
every Linux capability dropped, `no-new-privileges`, a memory limit (swap included),
a process-count limit and a CPU quota; it sees its own filesystem and process tree.
What is not: it shares the host kernel (a kernel exploit escapes it), and anyone who
can reach the Docker engine controls it. Run untrusted code on a machine you can lose.

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
import os
import queue
import select
import socket
import struct
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType

import docker
import docker.errors
import docker.models.containers
import requests.exceptions

from mentorgym.errors import DockerUnavailableError

LABEL = "mentorgym"
RUN_ID = os.environ.get("MENTORGYM_RUN_ID") or uuid.uuid4().hex[:12]
"""Labels every container this process creates; set MENTORGYM_RUN_ID to name a run."""

_STATE_FILE = "/tmp/.mentorgym_shell_state"

_client: docker.DockerClient | None = None
_client_lock = threading.Lock()
_reaped = False


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
    for container in c.containers.list(all=True, filters={"label": LABEL}):
        labels = container.labels
        if labels.get("mentorgym.owner_host") != host:
            continue  # a pid on another host says nothing about this one
        if labels.get("mentorgym.owner_pid") == me and _owner_alive(labels):
            continue
        if not all_runs and _owner_alive(labels):
            continue
        try:
            container.remove(force=True)
            removed += 1
        except docker.errors.NotFound:
            pass  # removed concurrently by another reaper
    return removed


def _reap_once() -> None:
    global _reaped
    if _reaped:
        return
    _reaped = True
    try:
        reap()
    except docker.errors.APIError:
        pass  # reaping is hygiene; a failure here must not stop the sandbox being made


# --- the shell protocol ------------------------------------------------------------------


class _Stream:
    """A bash process inside the container, attached by a raw socket (multiplexed frames)."""

    def __init__(self, api: docker.APIClient, container_id: str, argv: list[str], workdir: str):
        self.exec_id = api.exec_create(
            container_id, argv, stdin=True, stdout=True, stderr=True, workdir=workdir
        )["Id"]
        sock = api.exec_start(self.exec_id, socket=True)
        self.sock: socket.socket = getattr(sock, "_sock", sock)
        self.sock.setblocking(True)
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
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
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

    def close(self, wait: bool = True) -> None:
        """Kill and remove the container; safe twice and from a `finally`.

        With `wait=False` the removal happens on a background thread and close returns at
        once (an episode loop need not wait for the engine); `drain_removals()` and exit
        wait for those, and `reap()` catches any that a SIGKILL interrupted.
        """
        if self._closed:
            return
        self._closed = True
        for stream in (self._shell, self._control):
            if stream is not None:
                stream.close()
        container = getattr(self, "container", None)
        if container is None:
            return
        if wait:
            _remove(container)
        else:
            _removals.put(container)
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


def _root_owned(info):  # type: ignore[no-untyped-def]
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _remove(container: docker.models.containers.Container) -> None:
    try:
        # Force-remove kills at once; a graceful stop waits 10 s on a PID 1 that
        # ignores SIGTERM, and a sandbox holds nothing worth a clean shutdown.
        container.remove(force=True)
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
