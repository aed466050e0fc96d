"""One trajectory file, indexed by byte offset: summaries of its episodes, its bad lines,
and a search over its text."""

from __future__ import annotations

import json
import mmap
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mentorgym.envs.swe.refusals import reasons as refusal_reasons
from mentorgym.errors import ConfigError


@dataclass
class Summary:
    """What the episode list shows and filters on; the turns stay on disk."""

    k: int
    """Index of the episode in its file (0-based, counting only valid lines)."""
    line: int
    """1-based line number in the file."""
    offset: int
    length: int
    env_id: str
    seed: int | None
    task_id: str | None
    success: bool
    return_: float
    turns: int
    student_turns: int
    other_turns: int
    """Turns written by the teacher (see `teacher_names`); the rest count as the student's."""
    label_diffs: int
    """Student turns where the teacher's label differs from what the student wrote."""
    format_errors: int
    truncated: bool
    agent: str
    refusals: str = ""
    """Why the grader refused parts of the episode's patch, comma-separated (SWE:
    `excluded/conftest`, ...; a string, so the index stays flat)."""

    @property
    def mix(self) -> str:
        if self.turns == 0:
            return "none"
        if self.other_turns == 0:
            return "student"
        return "teacher" if self.student_turns == 0 else "mixed"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["return"] = d.pop("return_")
        d["mix"] = self.mix
        return d


@dataclass
class BadLine:
    line: int
    reason: str


def teacher_names(meta: dict[str, Any]) -> set[str]:
    """Actor names that mean the teacher wrote the turn: a mixture writes "teacher", and a
    rollout whose agent is the oracle writes "expert" (or the teacher's spec)."""
    names = {"teacher", "expert"}
    if isinstance(meta.get("teacher"), str):
        names.add(meta["teacher"])
    return names


def _summarize(d: Any) -> Summary | str:
    """The summary of one decoded line, or why the line is not a trajectory."""
    if not isinstance(d, dict):
        return f"not a trajectory: a JSON {type(d).__name__}, expected an object"
    turns = d.get("turns")
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        return "not a trajectory: no 'turns' list of objects"
    meta = d.get("meta") if isinstance(d.get("meta"), dict) else {}
    teachers = teacher_names(meta)
    student = sum(1 for t in turns if t.get("actor") not in teachers)
    diffs = sum(
        1
        for t in turns
        if t.get("actor") not in teachers
        and t.get("teacher_action") is not None
        and t.get("teacher_action") != t.get("action")
    )
    fmt = sum(1 for t in turns if isinstance(t.get("info"), dict) and t["info"].get("format_error"))
    ret = d.get("return")
    if not isinstance(ret, (int, float)):
        ret = sum(t["reward"] for t in turns if isinstance(t.get("reward"), (int, float)))
    return Summary(
        k=-1,
        line=-1,
        offset=-1,
        length=-1,
        env_id=str(d.get("env_id", "?")),
        seed=d.get("seed") if isinstance(d.get("seed"), int) else None,
        task_id=None if d.get("task_id") is None else str(d.get("task_id")),
        success=bool(d.get("success")),
        return_=float(ret),
        turns=len(turns),
        student_turns=student,
        other_turns=len(turns) - student,
        label_diffs=diffs,
        format_errors=fmt,
        truncated=bool(d.get("truncated")),
        agent=str(meta.get("agent", "")),
        refusals=_refusals(turns),
    )


def _refusals(turns: list[dict[str, Any]]) -> str:
    """The grader's refusal reasons in the last turn's info (empty outside SWE)."""
    info = turns[-1].get("info") if turns else None
    return ", ".join(sorted(refusal_reasons(info))) if isinstance(info, dict) else ""


def decode_line(raw: bytes) -> Any | str:
    """The JSON value of one line, or a sentence saying why it has none."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return f"not JSON ({e.msg} at column {e.colno})"


def _texts(x: Any) -> list[str]:
    """Every string value inside a decoded trajectory (keys excluded): what search looks at."""
    out: list[str] = []
    stack = [x]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return out


class TrajectoryFile:
    """A trajectory JSONL indexed by byte offset; `refresh()` indexes what was appended."""

    def __init__(self, path: Path, fid: int, kind: str, iteration: int | None, run: int | None):
        self.path = path
        self.fid = fid
        self.kind = kind
        self.iteration = iteration
        self.run = run
        self.episodes: list[Summary] = []
        self.bad: list[BadLine] = []
        self._pos = 0  # byte offset just past the last complete line indexed
        self._lines = 0
        self._head = b""  # the file's first bytes, to notice a file rewritten in place
        self._ino = -1
        self._lock = threading.Lock()
        self._search_cache: OrderedDict[tuple[str, int], list[int]] = OrderedDict()

    def _reset(self) -> None:
        self.episodes, self.bad = [], []
        self._pos = self._lines = 0
        self._head = b""
        self._search_cache.clear()

    def refresh(self) -> None:
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                self._reset()
                return
            if st.st_size == self._pos and st.st_ino == self._ino:
                return
            with open(self.path, "rb") as f:
                head = f.read(64)
                if (
                    st.st_ino != self._ino
                    or st.st_size < self._pos
                    or head[: len(self._head)] != self._head
                ):
                    self._reset()
                self._ino = st.st_ino
                self._head = head
                f.seek(self._pos)
                while True:
                    raw = f.readline()
                    if not raw.endswith(b"\n"):
                        break  # end of file, or a line still being written
                    offset, self._pos = self._pos, self._pos + len(raw)
                    self._lines += 1
                    self._index_line(raw, offset)

    def _index_line(self, raw: bytes, offset: int) -> None:
        if not raw.strip():
            return
        d = decode_line(raw)
        s = d if isinstance(d, str) else _summarize(d)
        if isinstance(s, str):
            self.bad.append(BadLine(self._lines, s))
            return
        s.k, s.line, s.offset, s.length = len(self.episodes), self._lines, offset, len(raw)
        self.episodes.append(s)

    def read(self, k: int) -> dict[str, Any]:
        """Episode k, read from disk at its offset."""
        s = self.episodes[k]
        with open(self.path, "rb") as f:
            f.seek(s.offset)
            raw = f.read(s.length)
        d = decode_line(raw)
        if isinstance(d, str) or not isinstance(d, dict):
            raise ConfigError(f"{self.path} line {s.line} changed on disk since it was indexed")
        return d

    def search(self, query: str) -> list[int]:
        """Indices of the episodes whose text (actions, messages, labels, ids) holds `query`,
        case-insensitively."""
        with self._lock:
            key = (query.lower(), self._pos)
            if key in self._search_cache:
                self._search_cache.move_to_end(key)
                return self._search_cache[key]
            hits = self._search(query)
            self._search_cache[key] = hits
            while len(self._search_cache) > 16:
                self._search_cache.popitem(last=False)
            return hits

    def _search(self, query: str) -> list[int]:
        if not self.episodes or not query:
            return []
        needle = query.lower()
        # Prefilter on raw bytes: the query as it appears inside a JSON string (quotes,
        # backslashes and newlines escaped), in ASCII-lowered lines. A non-ASCII query skips
        # the prefilter (bytes.lower() folds ASCII only, and \uXXXX escapes vary in case).
        raw_needle = json.dumps(needle)[1:-1].encode() if needle.isascii() else None
        hits = []
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for s in self.episodes:
                raw = m[s.offset : s.offset + s.length]
                if raw_needle is not None and raw_needle not in raw.lower():
                    continue
                # Then only what an agent or env wrote counts, not the JSON keys.
                if any(needle in t.lower() for t in _texts(json.loads(raw.decode("utf-8")))):
                    hits.append(s.k)
        return hits

    def describe(self) -> dict[str, Any]:
        return {
            "fid": self.fid,
            "path": str(self.path),
            "kind": self.kind,
            "iteration": self.iteration,
            "run": self.run,
            "episodes": len(self.episodes),
        }
