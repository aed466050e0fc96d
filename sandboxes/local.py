"""A sandbox that runs commands as local subprocesses in a temporary directory.

THIS IS NO SECURITY BOUNDARY. Commands run as the same user as mentorgym, see the same
filesystem (the temporary directory is only the working directory, not a jail) and the same
network. Use it for trusted code: generated arithmetic, tests, scripted agents. For code an
LLM wrote that you do not trust, use the Docker or bubblewrap backend
(`mentorgym.sandboxes.docker`, `mentorgym.sandboxes.bwrap`; SECURITY.md compares them).

What it does limit, per command:

- **Time**: the command runs in its own process group; at the timeout the whole group gets
  SIGKILL and `exec` returns `ExecResult(timed_out=True, exit_code=-1)` with the output so
  far. When the shell exits, processes it left in the background get 0.2 s to flush
  their output and are then killed with the group. A process that left the group
  (`setsid`, a daemon) is not reaped.
- **Memory**: RLIMIT_AS (virtual address space) on the shell and everything it starts, so
  an allocation past `memory_mb` fails (Python raises `MemoryError`). Each process gets the
  limit on its own; it is not a total over the group.
- **Processes**: RLIMIT_NPROC. The kernel counts it over *all* processes and threads of the
  user, not only the sandbox's, so the limit is set to the user's current count (read from
  /proc at each command) plus `max_processes`. The kernel does not enforce it for root (nor
  with CAP_SYS_RESOURCE / CAP_SYS_ADMIN), so as root none is set and a fork bomb is stopped
  only by the timeout's group kill. Without /proc no process limit is set.
- **Output**: stdout and stderr are interleaved, decoded as UTF-8 with replacement and cut
  to `output_limit` characters with a notice (head and tail kept). Output past a few times
  the limit is drained and dropped while the command runs, so a chatty command cannot fill
  memory.

`python3` inside the sandbox is the interpreter that runs mentorgym (its directory is put
first on PATH), so tool code sees the same Python version everywhere.

Commands get a clean environment: PATH, HOME (the sandbox directory), LANG and the `env`
passed in, never this process's own (which holds API keys and tokens). That keeps secrets
out of a command's *environment* only: the command can still read any file this user can.
The first LocalSandbox of a process warns (`UnisolatedSandboxWarning`) that it is no
security boundary.
"""

from __future__ import annotations

import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import TracebackType

from mentorgym.errors import SandboxError
from mentorgym.sandboxes.base import DEFAULT_OUTPUT_LIMIT, ExecResult, OutputCollector

_GRACE_S = 0.2
"""How long output is still read after the shell exits, before its leftover processes die."""

# The shell waits on stdin until the parent has set its limits with prlimit(2), then execs
# the command: no limit-free window, and no `preexec_fn`, which is unsafe when the parent has
# threads (the rollout engine steps envs from a thread pool).
_WAIT_THEN_RUN = 'read -r _ || exit 125; exec /bin/sh -c "$1"'


class UnisolatedSandboxWarning(UserWarning):
    """Agent commands run with this process's rights (LocalSandbox)."""


_warned = False


def _warn_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            "LocalSandbox runs commands as this user, with its files and network: no "
            "security boundary. Use it only for trusted code; for agent code use the Docker "
            "or bubblewrap sandbox (see SECURITY.md)",
            UnisolatedSandboxWarning,
            stacklevel=3,
        )


def clean_env(home: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment an agent command gets: PATH, HOME, LANG and `extra`, nothing inherited."""
    env = {
        "PATH": os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "LANG": "C.UTF-8",
    }
    env.update(extra or {})
    return env


def _user_task_count(uid: int) -> int | None:
    """Processes plus threads whose real uid is `uid` (what RLIMIT_NPROC counts), or None."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    count = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:  # the process exited while we looked
            continue
        real_uid = threads = None
        for line in status.splitlines():
            if line.startswith("Uid:"):
                real_uid = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
        if real_uid == uid:
            count += threads or 1
    return count


class LocalSandbox:
    """Run shell commands as subprocesses in a private temporary directory (no isolation).

    Args:
        memory_mb: address-space limit per process in MiB; None for none.
        max_processes: how many processes/threads a command may add to the user's current
            count; None for no limit. Not set for root (see the module docstring).
        output_limit: characters of output kept per command.
        env: environment variables for commands, on top of PATH, HOME and LANG (this
            process's own environment is never passed on).
    """

    def __init__(
        self,
        *,
        memory_mb: int | None = 1024,
        max_processes: int | None = 64,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        env: dict[str, str] | None = None,
    ):
        if (memory_mb or max_processes) and not hasattr(resource, "prlimit"):
            raise SandboxError(
                "LocalSandbox limits need prlimit(2), which this platform lacks (Linux has it); "
                "pass memory_mb=None and max_processes=None to run without limits"
            )
        self.memory_mb = memory_mb
        self.max_processes = max_processes
        self.output_limit = output_limit
        _warn_once()
        self._root: Path | None = Path(tempfile.mkdtemp(prefix="mentorgym-local-"))
        self._env = clean_env(str(self._root), env)
        python_dir = str(Path(sys.executable).parent)
        self._env["PATH"] = python_dir + os.pathsep + self._env.get("PATH", "")
        self._env["PYTHONDONTWRITEBYTECODE"] = "1"

    @property
    def root(self) -> Path:
        """The temporary working directory; raises `SandboxError` once closed."""
        if self._root is None:
            raise SandboxError("this LocalSandbox is closed; create a new one")
        return self._root

    def exec(self, cmd: str, timeout: float = 30.0) -> ExecResult:
        """Run `cmd` with /bin/sh in the sandbox directory; never raises for what `cmd` does."""
        proc = subprocess.Popen(
            ["/bin/sh", "-c", _WAIT_THEN_RUN, "sh", cmd],
            cwd=self.root,
            env=self._env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a timeout can kill all of it
        )
        assert proc.stdin is not None
        try:
            self._limit(proc.pid)
        except OSError as e:
            proc.stdin.close()  # EOF: the shell exits 125 without running `cmd`
            _kill_group(proc.pid)
            proc.wait()
            raise SandboxError(f"could not set the sandbox's limits on its command: {e}") from e
        proc.stdin.write(b"go\n")
        proc.stdin.close()  # the command itself sees an empty stdin
        assert proc.stdout is not None
        reader = OutputCollector(self.output_limit)
        timed_out = False
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                now = time.monotonic()
                if proc.poll() is not None and deadline > now + _GRACE_S:
                    # The shell is done; background jobs still holding the pipe get a
                    # moment to flush, then die with the group below.
                    deadline = now + _GRACE_S
                left = deadline - now
                if left <= 0:
                    timed_out = proc.poll() is None
                    break
                if not sel.select(timeout=min(left, 0.05)):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:  # EOF: every process holding the pipe has exited
                    break
                reader.add(chunk)
        # Reap whatever is left in the group (background jobs, a timed-out command).
        _kill_group(proc.pid)
        proc.stdout.close()
        returncode = proc.wait()
        text, truncated = reader.text()
        return ExecResult(
            exit_code=-1 if timed_out else returncode,
            output=text,
            timed_out=timed_out,
            truncated=truncated,
            # SIGKILL that we did not send: the kernel's OOM killer is the usual sender.
            oom_killed=not timed_out and returncode == -signal.SIGKILL,
        )

    def _limit(self, pid: int) -> None:
        if self.memory_mb:
            _cap(pid, resource.RLIMIT_AS, self.memory_mb * 1024 * 1024)
        if self.max_processes and os.getuid() != 0:  # root is exempt: the kernel skips it
            current = _user_task_count(os.getuid())
            if current is not None:
                _cap(pid, resource.RLIMIT_NPROC, current + self.max_processes)

    def _path(self, path: str) -> Path:
        # Relative paths live in the sandbox directory; absolute ones are used as they are
        # (same filesystem: this is no jail).
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def read_file(self, path: str) -> bytes:
        """The bytes of `path` (relative to the sandbox directory); `FileNotFoundError` if absent."""
        return self._path(path).read_bytes()

    def write_file(self, path: str, content: str | bytes) -> None:
        """Write `content` (str as UTF-8) to `path`, creating parent directories."""
        p = self._path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)

    def close(self) -> None:
        """Delete the sandbox directory; safe to call twice."""
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> LocalSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_root", None) is not None:
            self.close()

    def __repr__(self) -> str:
        return f"LocalSandbox(root={str(self._root) if self._root else 'closed'})"


def _cap(pid: int, kind: int, want: int) -> None:
    """Lower both limits of `kind` on `pid` to `want` (or to the hard limit, if that is lower)."""
    hard = resource.prlimit(pid, kind)[1]
    value = want if hard == resource.RLIM_INFINITY else min(want, hard)
    resource.prlimit(pid, kind, (value, value))


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the group is already gone
        pass
