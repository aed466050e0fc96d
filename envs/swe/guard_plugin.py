"""mentorgym's grading guard: a pytest plugin loaded first (`-p mentorgym_guard`).

Copied into the grading container as `mentorgym_guard.py`. pytest imports it while it
parses its options, before any conftest, test module or entry-point plugin, so before
any code of the graded patch runs. It does two things, and decides nothing:

1. **Writes each outcome as it happens** to a pipe inherited from the supervisor
   (`supervisor.py`, the parent of the test command), one JSON line per event, numbered
   per process: each test phase's report, each collection error, each capability use
   the audit hook saw, and a closing line with the count of lines it wrote. What the
   supervisor has read, the test process cannot take back; a line it did not write
   breaks the numbering; a process that dies early leaves no closing line.
2. **Installs a CPython audit hook** (PEP 578) that notes, as they happen, events raised
   from the graded files for capabilities their original versions did not use (the
   policy comes from the grader: `capabilities.py`), and checks `sys.meta_path` and
   `sys.path_hooks` at the end of the session for entries the graded files added.

The grader reads the record on the host. Code running in the test process can still
attack the guard itself (read its memory); the static check and this hook make each
such route a capability the patch must not add. Written for Python 3.6+ and pytest 5+.
"""

import json
import os
import stat
import sys
import sysconfig
import tempfile

import pytest

_FD = -1
try:
    _fd, _inode = os.environ.pop("MENTORGYM_RECORD_FD", "").split(":")
    if stat.S_ISFIFO(os.fstat(int(_fd)).st_mode) and os.fstat(int(_fd)).st_ino == int(_inode):
        _FD = int(_fd)
except (ValueError, OSError):
    _FD = -1
try:
    with open(os.environ.pop("MENTORGYM_GUARD_POLICY", "")) as _f:
        _POLICY = json.load(_f)
except (OSError, ValueError):
    _POLICY = {"root": "", "files": {}, "events": {}}
_ROOT = os.path.realpath(_POLICY.get("root") or os.getcwd())
# absolute path of each graded file -> the capabilities its original version used
_FILES = {os.path.join(_ROOT, p): set(c) for p, c in _POLICY.get("files", {}).items()}
_EVENTS = dict(_POLICY.get("events", {}))
_DIRECT_EVENTS = ("exec", "compile")  # attributed only to the frame that called them
_STDLIB = tuple(
    p for p in {sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("platstdlib")} if p
)
_TEMP = (os.path.realpath(tempfile.gettempdir()), "/dev/null", "/dev/shm")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class _Record:
    def __init__(self):
        self.seq = 0
        self.seen = set()
        self.busy = False
        self.worker = False

    def emit(self, kind, **fields):
        if _FD < 0 or self.worker:
            return
        fields.update(pid=os.getpid(), seq=self.seq, e=kind)
        self.seq += 1
        data = (json.dumps(fields, sort_keys=True) + "\n").encode("utf-8")
        while data:
            try:
                data = data[os.write(_FD, data) :]
            except InterruptedError:
                continue
            except OSError:
                return


_record = _Record()


def _code_frame(frame, direct):
    """The frame an event is charged to: the caller itself, or the innermost non-stdlib one."""
    while frame is not None and not direct:
        name = frame.f_code.co_filename
        if not (name.startswith(_STDLIB) or name.startswith("<frozen")):
            break
        frame = frame.f_back
    return frame


def _capability(event, args):
    if event == "open":
        path, mode, flags = (list(args) + [None, None, None])[:3]
        writes = bool(mode and any(c in str(mode) for c in "wax+")) or bool(
            mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        if isinstance(path, bytes):
            path = path.decode("utf-8", "replace")
        if isinstance(path, str) and path.startswith(("/proc/", "/dev/fd")):
            return "descriptors"
        if not writes or not isinstance(path, str):
            return "descriptors" if writes and isinstance(path, int) else None
        real = os.path.realpath(path)
        if real.endswith((".pyc", ".pyo")) or real.startswith(_TEMP):
            return None
        return None if real == _ROOT or real.startswith(_ROOT + "/") else "writes_outside"
    if event == "object.__setattr__":
        owner = getattr(args[0], "__module__", "") if args else ""
        owner = owner if isinstance(owner, str) else ""
        return "pytest" if owner.split(".")[0] in ("_pytest", "pytest", "pluggy") else None
    return _EVENTS.get(event)


def _audit(event, args):
    if _record.busy or not _FILES or (event not in _EVENTS and event != "open"):
        return
    _record.busy = True
    try:
        capability = _capability(event, args)
        if capability is None:
            return
        frame = _code_frame(sys._getframe(1), event in _DIRECT_EVENTS)
        if frame is None:
            return
        path = frame.f_code.co_filename
        if path not in _FILES or capability in _FILES[path]:
            return
        key = (path, capability)
        if key not in _record.seen:
            _record.seen.add(key)
            rel = os.path.relpath(path, _ROOT)
            _record.emit("audit", file=rel, line=frame.f_lineno, capability=capability, event=event)
    except Exception:
        pass
    finally:
        _record.busy = False


if _FILES and hasattr(sys, "addaudithook"):
    sys.addaudithook(_audit)
_HOOKS_AT_START = (list(sys.meta_path), list(sys.path_hooks))


def _defined_in(obj):
    code = getattr(obj, "__code__", None)
    if code is not None:
        return code.co_filename
    module = sys.modules.get(getattr(type(obj), "__module__", "") or "")
    return os.path.realpath(getattr(module, "__file__", "") or "")


def _check_import_hooks():
    for now, before in zip((sys.meta_path, sys.path_hooks), _HOOKS_AT_START):
        for hook in now:
            if any(hook is b for b in before):
                continue
            path = _defined_in(hook)
            if path in _FILES and "import_hooks" not in _FILES[path]:
                rel = os.path.relpath(path, _ROOT)
                _record.emit(
                    "audit", file=rel, line=0, capability="import_hooks", event="meta_path"
                )


def pytest_configure(config):
    _record.worker = hasattr(config, "workerinput")  # xdist: the controller records


def pytest_collectreport(report):
    if report.failed:
        _record.emit("collecterror", nodeid=report.nodeid)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report):
    _record.emit(
        "report",
        nodeid=report.nodeid,
        when=report.when,
        outcome=str(report.outcome),
        xfail=hasattr(report, "wasxfail"),
    )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    _check_import_hooks()
    _record.emit("finish", exitstatus=int(exitstatus), lines=_record.seq)
