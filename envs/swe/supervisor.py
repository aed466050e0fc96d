"""The grading run's supervisor: the parent of the test command, outside its reach.

    python3 supervisor.py RECORD LOG TIMEOUT [--contained] -- COMMAND...

Copied into the grading container. It opens a pipe, starts COMMAND (its output to LOG)
with the pipe's write end inherited (`MENTORGYM_RECORD_FD=fd:inode`, which the guard
plugin checks before writing), and reads the guard's lines as they are written. When
the command ends (or TIMEOUT seconds pass) it kills what the command started, so that
nothing started by the tested code outlives the run, and only then writes RECORD: the lines it read, the command's exit code, whether it timed out.
Nothing is judged here: the grader parses the record on the host. Python 3.6+, stdlib only.
"""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time


def _pids():
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


def _session(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[4])
    except (OSError, ValueError, IndexError):
        return None


def _kill_new(before, session, contained):
    """SIGKILL what the command started, until none is left: in a container of its own
    (`contained`) every process not in `before`, else only the command's session (a
    process that left it with setsid escapes; the grading container is contained)."""
    killed = 0
    for _ in range(50):
        new = _pids() - before - {os.getpid()}
        if not contained:
            new = {pid for pid in new if _session(pid) == session}
        if not new:
            break
        for pid in new:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        for pid in new:  # reap our own children; the container's init reaps the rest
            try:
                os.waitpid(pid, os.WNOHANG)
            except OSError:
                pass
        time.sleep(0.02)
    return killed


def _read_all(fd, child, deadline):
    """Bytes from the pipe until every writer closed it, the child ended a while ago, or timeout."""
    chunks, ended, timed_out = [], None, False
    while True:
        now = time.time()
        if now > deadline:
            timed_out = True
            break
        if ended is None and child.poll() is not None:
            ended = now
        if ended is not None and now - ended > 2.0:
            break  # something the command started still holds the pipe open
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            data = os.read(fd, 65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks), timed_out


def _write_record(path, record):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)


def main(argv):
    record_path, log_path, timeout = argv[1], argv[2], float(argv[3])
    contained = "--contained" in argv[: argv.index("--")]
    command = argv[argv.index("--") + 1 :]
    before = _pids()
    read_end, write_end = os.pipe()
    env = dict(os.environ)
    env["MENTORGYM_RECORD_FD"] = f"{write_end}:{os.fstat(write_end).st_ino}"
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            pass_fds=(write_end,), env=env, start_new_session=True,
        )  # fmt: skip
    os.close(write_end)
    data, timed_out = _read_all(read_end, child, time.time() + timeout)
    killed = _kill_new(before, child.pid, contained)
    code = child.poll()
    lines = data.decode("utf-8", "replace").split("\n")
    record = {
        "lines": [line for line in lines if line],
        "partial_line": bool(lines and lines[-1]),
        "exit_code": code,
        "timed_out": timed_out,
        "killed": killed,
    }
    _write_record(record_path, record)
    return 0 if code is None else code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
