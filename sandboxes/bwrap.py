"""Bubblewrap sandboxes: a persistent shell in fresh Linux namespaces, no Docker needed.

`BwrapSandbox` starts `bwrap` (Debian's `bubblewrap` package) once and keeps a shell open
inside it; each `exec` writes the command to that shell, so a call costs a pipe round trip,
not a namespace setup (~50 ms). What the shell runs in:

- **User namespace, non-root**: uid/gid 1000 inside, every capability dropped, no new user
  namespaces (`--disable-userns`). When mentorgym runs as root, bwrap itself is started as
  an unprivileged host uid (`host_uid`, default 65534 "nobody"), so a process that got out
  of the namespaces would still hold no root rights on the host, and the kernel enforces
  RLIMIT_NPROC (it never does for host root).
- **Filesystem**: a fresh root holding only the system directories (/usr, /bin, /lib*,
  /sbin, and the Python installation's prefix) read-only, a few files of /etc (the dynamic
  linker's cache, a generated passwd and group), a private /proc, a minimal /dev, a private
  tmpfs /tmp of `tmp_mb`, and the work directory `/sandbox` (HOME), the only writable path
  that outlives a command. The host's home directories, the project, its data sets and
  checkpoints are not in the sandbox at all; the root itself is read-only.
- **Network**: its own network namespace holding only loopback; the host's 127.0.0.1 is not
  reachable from it.
- **Processes**: its own pid namespace (it cannot see or signal the host's processes);
  `--die-with-parent`, so it dies with the process that started it, even on SIGKILL.
- **Limits** (set inside, on the shell, so every process it starts inherits them):
  RLIMIT_NPROC `max_processes` (counted per user namespace, so per sandbox), RLIMIT_AS
  `memory_mb` per process, RLIMIT_CPU `cpu_seconds` per process, RLIMIT_FSIZE `file_mb`
  per file, no core dumps.
- **Environment**: PATH, HOME, LANG, PYTHONDONTWRITEBYTECODE and the `env` passed in;
  nothing of the parent's environment. bwrap itself starts with an empty environment too:
  its init process lives in the sandbox, where `/proc/1/environ` is readable.

What it does not do: it shares the host kernel (a kernel exploit escapes it); memory is
limited per process, not in total (no cgroup: a sandbox could use `max_processes` times
`memory_mb`); disk use of the work directory is limited per file only; CPU is not shared
fairly between sandboxes.

A command that outlives its timeout takes the whole sandbox with it: every process in the
namespace is killed (so nothing of a fork bomb or a background job survives), and the next
`exec` starts a new shell over the same work directory (the directory and exported
variables of the killed shell are lost). The same happens when a command kills the shell
(`exit`, `kill -9 -1`). The kernel ties `--die-with-parent` to the *thread* that started
bwrap, so every bwrap is started by one long-lived thread of this module: a sandbox made in
a worker thread that then ends keeps running.
"""

from __future__ import annotations

import errno
import os
import queue
import secrets
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any

from mentorgym.errors import SandboxError
from mentorgym.sandboxes.base import DEFAULT_OUTPUT_LIMIT, ExecResult, OutputCollector

WORKDIR = "/sandbox"
"""The work directory inside the sandbox (also HOME)."""
SANDBOX_UID = 1000
"""The uid and gid commands run as inside the sandbox."""
HOST_UID_WHEN_ROOT = 65534
"""The host uid bwrap runs as when mentorgym runs as root ("nobody" on Debian)."""

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime")

# Runs first inside the sandbox: set the limits on itself, then become the shell, so that
# no process in the sandbox ever runs without them. RLIMIT_NPROC counts per user
# namespace (kernel >= 5.14), so it bounds this sandbox's processes, not the host user's.
_LAUNCHER = (
    "import os, resource as r, sys\n"
    "kinds = (r.RLIMIT_NPROC, r.RLIMIT_AS, r.RLIMIT_CPU, r.RLIMIT_FSIZE, r.RLIMIT_CORE)\n"
    "for kind, value in zip(kinds, map(int, sys.argv[1:])):\n"
    "    if value >= 0:\n"
    "        r.setrlimit(kind, (value, value))\n"
    "os.execv('/bin/sh', ['sh', '-s'])\n"
)

_BWRAP_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
"""The environment of bwrap itself: nothing of the trainer's."""

_checked: dict[str, str | None] = {}
_checked_lock = threading.Lock()


def _host_ids() -> tuple[int, int] | None:
    """The (uid, gid) to run bwrap as: an unprivileged one when we are root, else ours."""
    return (HOST_UID_WHEN_ROOT, HOST_UID_WHEN_ROOT) if os.getuid() == 0 else None


def bwrap_available() -> str | None:
    """None when bubblewrap can make a sandbox on this machine, else why not and what to do.

    Runs one tiny sandbox the first time (about 50 ms) and remembers the answer.
    """
    with _checked_lock:
        if "answer" not in _checked:
            _checked["answer"] = _probe()
        return _checked["answer"]


def _probe() -> str | None:
    exe = shutil.which("bwrap")
    if exe is None:
        return (
            "bubblewrap is not installed (no `bwrap` on PATH): install it with "
            "`apt-get install bubblewrap` (Debian/Ubuntu) or `dnf install bubblewrap`"
        )
    with tempfile.TemporaryDirectory(prefix="mentorgym-bwrap-check-") as tmp:
        ids = _host_ids()
        if ids is not None:
            os.chown(tmp, *ids)
        argv = _bwrap_argv(exe, Path(tmp), Path(tmp), {}, tmp_mb=1)
        try:
            r = subprocess.run(
                [*argv, "/bin/sh", "-c", "exit 0"],
                env=_BWRAP_ENV,
                capture_output=True,
                timeout=30,
                **_drop_kwargs(ids),
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"bubblewrap ({exe}) could not run: {e}"
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip()
        hint = ""
        if "namespace" in err or "uid map" in err or "not permitted" in err:
            hint = (
                ". It needs unprivileged user namespaces: sysctl user.max_user_namespaces > 0 "
                "(and kernel.unprivileged_userns_clone=1 on older Debian kernels, "
                "kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu 24.04); inside a "
                "Docker container the default seccomp profile blocks them"
            )
        return f"bubblewrap ({exe}) could not start a sandbox here: {err or r.returncode}{hint}"

    return None


def _in_system_dirs(path: str) -> bool:
    real = os.path.realpath(path)
    return any(real == d or real.startswith(d + "/") for d in _SYSTEM_DIRS)


def sandbox_python() -> str:
    """The python3 commands get: the system's (/usr/bin/python3) when there is one, so
    nothing outside the system directories is mounted; else this interpreter's base
    installation (`sys.base_prefix`, never the virtualenv), which is then mounted read-only
    and must be readable by the uid bwrap runs as."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return str(Path(sys.base_prefix) / "bin" / "python3")


_spawn_requests: queue.Queue[tuple[list[str], dict[str, Any], Future[Any]]] = queue.Queue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def _spawn_loop() -> None:
    while True:
        argv, kwargs, done = _spawn_requests.get()
        try:
            done.set_result(subprocess.Popen(argv, **kwargs))
        except BaseException as e:
            done.set_exception(e)


def _popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Popen from this module's spawner thread, which lives as long as the process: the
    kernel sends --die-with-parent's SIGKILL when the *thread* that forked bwrap ends."""
    global _spawner
    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():
            _spawner = threading.Thread(target=_spawn_loop, name="mentorgym-bwrap", daemon=True)
            _spawner.start()
    done: Future[subprocess.Popen[bytes]] = Future()
    _spawn_requests.put((argv, kwargs, done))
    return done.result()


def _readable(fd: int, timeout_s: float) -> bool:
    """Whether `fd` has data (or EOF) within `timeout_s`; poll(2), not select(2), which
    fails on descriptors past 1023 (a trainer with hundreds of sandboxes has those)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0.0, timeout_s) * 1000))


def _drop_kwargs(ids: tuple[int, int] | None) -> dict[str, object]:
    if ids is None:
        return {}
    return {"user": ids[0], "group": ids[1], "extra_groups": []}


def _bwrap_argv(exe: str, work: Path, meta: Path, env: dict[str, str], *, tmp_mb: int) -> list[str]:
    """The bwrap command line up to `--` (the program to run follows)."""
    prefix_bin = str(Path(sandbox_python()).parent)
    argv = [
        exe,
        "--unshare-all",  # user, pid, net, ipc, uts, cgroup namespaces
        "--unshare-user",
        "--disable-userns",
        "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID),
        "--hostname", "sandbox",
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--clearenv",
    ]  # fmt: skip
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    if not _in_system_dirs(prefix_bin):  # a Python installed outside /usr
        argv += ["--ro-bind", sys.base_prefix, sys.base_prefix]
    for name in _ETC_FILES:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for name in ("passwd", "group"):
        if (meta / name).exists():
            argv += ["--ro-bind", str(meta / name), f"/etc/{name}"]
    argv += [
        "--proc", "/proc",
        "--dev", "/dev",
        "--size", str(tmp_mb * 1024 * 1024), "--tmpfs", "/tmp",
        "--bind", str(work), WORKDIR,
        "--chdir", WORKDIR,
        "--remount-ro", "/",
    ]  # fmt: skip
    clean = {
        "PATH": ":".join(dict.fromkeys([prefix_bin, "/usr/local/bin", "/usr/bin", "/bin"])),
        "HOME": WORKDIR,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        **env,
    }
    for k, v in clean.items():
        argv += ["--setenv", k, v]
    return [*argv, "--"]


class BwrapSandbox:
    """A shell kept open inside bubblewrap namespaces; see the module docstring.

    Args:
        memory_mb: address-space limit per process in MiB (None: no limit).
        max_processes: processes and threads the sandbox may hold at once (None: no limit).
        cpu_seconds: CPU time per process (None: no limit).
        file_mb: largest file a command may write, in MiB (None: no limit).
        tmp_mb: size of the private /tmp.
        output_limit: characters of output kept per command.
        env: environment variables for commands, on top of PATH, HOME and LANG.

    `exec` never raises for what a command does; it raises `SandboxError` when the sandbox
    is closed or a new shell cannot start.
    """

    def __init__(
        self,
        *,
        memory_mb: int | None = 1024,
        max_processes: int | None = 64,
        cpu_seconds: int | None = 60,
        file_mb: int | None = 256,
        tmp_mb: int = 64,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        env: dict[str, str] | None = None,
    ):
        reason = bwrap_available()
        if reason is not None:
            raise SandboxError(reason)
        self.memory_mb = memory_mb
        self.max_processes = max_processes
        self.cpu_seconds = cpu_seconds
        self.file_mb = file_mb
        self.output_limit = output_limit
        self._ids = _host_ids()
        self._dir: Path | None = Path(tempfile.mkdtemp(prefix="mentorgym-bwrap-"))
        self._work = self._dir / "work"
        self._work.mkdir()
        (self._dir / "passwd").write_text(
            f"root:x:0:0:root:/root:/bin/sh\n"
            f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:{WORKDIR}:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        )
        (self._dir / "group").write_text(f"root:x:0:\nsandbox:x:{SANDBOX_UID}:\nnogroup:x:65534:\n")
        if self._ids is not None:
            for p in (self._dir, self._work):
                os.chown(p, *self._ids)
        exe = shutil.which("bwrap")
        assert exe is not None  # bwrap_available() found it
        self._argv = _bwrap_argv(exe, self._work, self._dir, dict(env or {}), tmp_mb=tmp_mb)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._nonce = secrets.token_hex(8)
        self._count = 0
        self._early_output = b""
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # --- the shell -------------------------------------------------------------------------

    def _start(self) -> None:
        """Start bwrap and its shell; wait until the shell answers."""
        limits = [
            (self.max_processes + 2) if self.max_processes else -1,  # + bwrap's init, the shell
            self.memory_mb * 1024 * 1024 if self.memory_mb else -1,
            self.cpu_seconds or -1,
            self.file_mb * 1024 * 1024 if self.file_mb else -1,
            0,
        ]
        argv = [*self._argv, sandbox_python(), "-I", "-S", "-c", _LAUNCHER, *map(str, limits)]
        try:
            self._proc = _popen(
                argv,
                # bwrap's own processes (the namespace's init among them, whose
                # /proc/1/environ the sandbox can read) must not hold the trainer's secrets.
                env=_BWRAP_ENV,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                **_drop_kwargs(self._ids),  # type: ignore[arg-type]
            )
        except OSError as e:
            raise SandboxError(f"could not start bubblewrap: {e}") from None
        ready = f"__MG_READY_{self._nonce}__"
        result = self._run(f"exec 2>&1; echo {ready}", 30.0, marker_only=ready)
        if result is None:
            output, code = self._reap_shell(grace_s=2.0)
            raise SandboxError(
                f"the bubblewrap sandbox did not start (exit code {code}): {output.strip()}"
            )

    def _send(self, script: bytes) -> bool:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(script)
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            return False
        return True

    def _run(self, script: str, timeout: float, marker_only: str) -> str | None:
        """Send `script`, read until a line `marker_only`; its output, or None if the shell died."""
        if not self._send(script.encode() + b"\n"):
            return None
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        want = marker_only.encode() + b"\n"
        while want not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not _readable(fd, left):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                self._early_output = buf
                return None
            buf += chunk
        return buf.split(want, 1)[0].decode(errors="replace")

    def _reap_shell(self, grace_s: float = 0.0) -> tuple[str, int]:
        """Kill every process of the sandbox; return what was left to read and the exit code.

        With `grace_s`, first give a shell that is exiting that long to report its status.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return "", 0
        if grace_s:
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        # SIGKILL to bwrap: --die-with-parent kills the namespace's init, and with it the
        # kernel kills every process in the pid namespace.
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        rest = getattr(self, "_early_output", b"")
        self._early_output = b""
        assert proc.stdout is not None
        try:
            while _readable(proc.stdout.fileno(), 0.5):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                rest += chunk
        except OSError:
            pass
        for f in (proc.stdin, proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        code = proc.wait()
        return rest.decode(errors="replace"), code

    # --- the Sandbox protocol --------------------------------------------------------------

    def exec(self, cmd: str, timeout: float = 30.0) -> ExecResult:
        """Run `cmd` in the persistent shell (stdout and stderr interleaved, stdin empty)."""
        with self._lock:
            if self._dir is None:
                raise SandboxError("this BwrapSandbox is closed; create a new one")
            if self._proc is None or self._proc.poll() is not None:
                self._reap_shell()
                self._start()
            self._count += 1
            marker = f"__MG_{self._nonce}_{self._count}__ ".encode()
            # Braces keep the command in this shell (so cd/export persist) while the
            # redirection applies only to it; the newline ends a trailing comment.
            script = (
                f"{{ eval {shlex.quote(cmd)}\n}} </dev/null; "
                f"printf '\\n%s%d\\n' '{marker.decode()}' \"$?\"\n"
            )
            if not self._send(script.encode()):
                self._reap_shell()
                self._start()
                if not self._send(script.encode()):
                    raise SandboxError("the bubblewrap shell died as soon as it started")
            return self._collect(marker, timeout)

    def _collect(self, marker: bytes, timeout: float) -> ExecResult:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        out = OutputCollector(self.output_limit)
        pending = bytearray()
        keep = len(marker) + 24  # enough to hold a marker line split across reads
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready = left > 0 and _readable(fd, left)
            if not ready:
                out.add(bytes(pending))
                self._reap_shell()
                text, truncated = out.text()
                notice = (
                    f"\n[timed out after {timeout:g} s: every process in the sandbox was "
                    "killed; the next command starts a new shell in the work directory]"
                )
                return ExecResult(-1, text + notice, True, truncated)
            chunk = os.read(fd, 65536)
            if not chunk:  # the shell exited: `exit`, `kill -9 -1`, a limit
                out.add(bytes(pending))
                rest, code = self._reap_shell(grace_s=2.0)
                out.add(rest.encode())
                text, truncated = out.text()
                code = 128 - code if code < 0 else code
                note = (
                    "\n[the shell exited; the next command starts a new one in the work directory]"
                )
                return ExecResult(code, text + note, False, truncated)
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
        return ExecResult(code, text, False, truncated)

    def alive(self) -> bool:
        """Whether this sandbox is open (a dead shell is restarted at the next `exec`)."""
        return self._dir is not None

    @property
    def workdir(self) -> Path:
        """The host directory mounted at /sandbox; raises `SandboxError` once closed."""
        if self._dir is None:
            raise SandboxError("this BwrapSandbox is closed; create a new one")
        return self._work

    def _open(self, path: str, flags: int, create_parents: bool = False) -> int:
        """A file descriptor for `path` (relative to /sandbox, or absolute under it).

        The host side runs with the trainer's rights and the sandbox may be changing its
        files meanwhile, so the path is walked one component at a time from the work
        directory with O_NOFOLLOW: no `..`, no symlink, not even one swapped in mid-walk.
        """
        p = Path(path)
        if p.is_absolute():
            try:
                p = p.relative_to(WORKDIR)
            except ValueError:
                raise ValueError(
                    f"{path} is outside {WORKDIR}: only the work directory is reachable "
                    "from outside the sandbox (use exec to read other files)"
                ) from None
        parts = [part for part in p.parts if part != "."]
        if not parts or ".." in parts:
            raise ValueError(f"{path} must name a file inside {WORKDIR}, without '..'")
        dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        fd = os.open(self.workdir, dir_flags)
        try:
            for part in parts[:-1]:
                if create_parents:
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                        if self._ids is not None:  # the sandbox must own what it may change
                            os.chown(part, *self._ids, dir_fd=fd, follow_symlinks=False)
                    except FileExistsError:
                        pass
                try:
                    next_fd = os.open(part, dir_flags, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):  # a symlink, or a file
                        raise PermissionError(f"{path}: {part} is not a directory") from None
                    raise
                os.close(fd)
                fd = next_fd
            return os.open(parts[-1], flags | os.O_NOFOLLOW, 0o644, dir_fd=fd)
        finally:
            os.close(fd)

    def read_file(self, path: str) -> bytes:
        """The bytes of a file under /sandbox; `FileNotFoundError` if absent."""
        with os.fdopen(self._open(path, os.O_RDONLY), "rb") as f:
            return f.read()

    def write_file(self, path: str, content: str | bytes) -> None:
        """Write `content` (str as UTF-8) to a file under /sandbox, creating parents."""
        data = content.encode() if isinstance(content, str) else content
        fd = self._open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, create_parents=True)
        with os.fdopen(fd, "wb") as f:
            if self._ids is not None:
                os.fchown(f.fileno(), *self._ids)
            f.write(data)

    def close(self) -> None:
        """Kill every process of the sandbox and delete its files; safe to call twice."""
        lock = getattr(self, "_lock", None)
        if lock is not None and not lock.acquire(blocking=False):
            # A command is running (another thread): killing bwrap ends it at once.
            proc = self._proc
            if proc is not None:
                proc.send_signal(signal.SIGKILL)
            lock.acquire()
        try:
            self._reap_shell()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
        finally:
            if lock is not None:
                lock.release()

    def __enter__(self) -> BwrapSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_dir", None) is not None:
            try:
                self.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        state = str(self._dir) if self._dir else "closed"
        return f"BwrapSandbox({state})"
