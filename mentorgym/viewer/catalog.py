"""What PATH holds: run directories, their trajectory files and metrics."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mentorgym.errors import ConfigError
from mentorgym.viewer.index import TrajectoryFile, decode_line

_ITER_RE = re.compile(r"^iter_(\d+)$")


def is_run_dir(d: Path) -> bool:
    """A directory `mentorgym train` wrote: it has metrics.jsonl, config.yaml or iter_XX/."""
    if (d / "metrics.jsonl").exists() or (d / "config.yaml").exists():
        return True
    return any(_ITER_RE.match(p.name) and p.is_dir() for p in d.iterdir())


def _run_files(run_dir: Path) -> list[tuple[Path, str, int | None]]:
    """(path, kind, iteration) of every trajectory file in a run, in a stable order."""
    out: list[tuple[Path, str, int | None]] = []
    for p in sorted(run_dir.glob("*.jsonl")):
        if p.name != "metrics.jsonl":
            out.append((p, p.stem, None))
    iters = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _ITER_RE.match(p.name))]
    for i, d in sorted(iters):
        if d.is_dir():
            out.extend((p, p.stem, i) for p in sorted(d.glob("*.jsonl")))
    return out


@dataclass
class RunFolder:
    rid: int
    name: str
    path: Path
    fids: list[int] = field(default_factory=list)

    def config(self) -> dict[str, Any]:
        p = self.path / "config.yaml"
        if not p.exists():
            return {"text": None, "values": {}}
        import yaml

        text = p.read_text(encoding="utf-8", errors="replace")
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError:
            values = {}
        return {"text": text, "values": values if isinstance(values, dict) else {}}


def read_metrics(path: Path, offset: int) -> dict[str, Any]:
    """Records of `metrics.jsonl` from byte `offset` on (complete lines only).

    Returns `{"records", "offset", "reset", "errors"}`: `offset` is where the next call
    starts; `reset` says the file shrank (a resumed run rewrote it), so the records are
    the whole file again and the caller replaces what it had.
    """
    if not path.exists():
        return {"records": [], "offset": 0, "reset": offset > 0, "errors": []}
    size = path.stat().st_size
    reset = offset > size
    if reset:
        offset = 0
    records: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    with open(path, "rb") as f:
        f.seek(offset)
        for raw in iter(f.readline, b""):
            if not raw.endswith(b"\n"):
                break  # a record still being written
            offset += len(raw)
            if not raw.strip():
                continue
            d = decode_line(raw)
            if isinstance(d, dict):
                records.append(d)
                continue
            with open(path, "rb") as g:  # line numbers are only worth counting for a bad line
                line = g.read(offset).count(b"\n")
            reason = d if isinstance(d, str) else "not a JSON object"
            errors.append({"file": str(path), "line": line, "reason": reason})
    return {"records": records, "offset": offset, "reset": reset, "errors": errors}


class Catalog:
    """What PATH holds: runs and trajectory files, found again on every call (a live run adds
    iteration folders); file ids stay stable for the life of the server."""

    def __init__(self, root: Path):
        if not root.exists():
            raise ConfigError(
                f"{root} does not exist: give a trajectories JSONL, a run directory or a folder of runs"
            )
        self.root = root
        self._files: dict[Path, TrajectoryFile] = {}
        self._runs: dict[Path, RunFolder] = {}
        self._lock = threading.Lock()

    def _file(
        self, path: Path, kind: str, iteration: int | None, run: int | None
    ) -> TrajectoryFile:
        f = self._files.get(path)
        if f is None:
            f = TrajectoryFile(path, len(self._files), kind, iteration, run)
            self._files[path] = f
        return f

    def scan(self) -> tuple[list[RunFolder], list[TrajectoryFile]]:
        """Runs and files under PATH now, each file's index brought up to date."""
        with self._lock:
            runs: list[RunFolder] = []
            files: list[TrajectoryFile] = []
            if self.root.is_file():
                files.append(self._file(self.root, self.root.stem, None, None))
            else:
                if is_run_dir(self.root):
                    run_dirs = [self.root]
                else:
                    run_dirs = sorted(
                        p for p in self.root.iterdir() if p.is_dir() and is_run_dir(p)
                    )
                    files.extend(
                        self._file(p, p.stem, None, None) for p in sorted(self.root.glob("*.jsonl"))
                    )
                for d in run_dirs:
                    run = self._runs.get(d)
                    if run is None:
                        run = self._runs[d] = RunFolder(len(self._runs), d.name or str(d), d)
                    run.fids = []
                    for p, kind, it in _run_files(d):
                        f = self._file(p, kind, it, run.rid)
                        run.fids.append(f.fid)
                        files.append(f)
                    runs.append(run)
        for f in files:
            f.refresh()
        return runs, files

    def file(self, fid: int) -> TrajectoryFile:
        for f in self._files.values():
            if f.fid == fid:
                return f
        raise KeyError(fid)

    def run(self, rid: int) -> RunFolder:
        for r in self._runs.values():
            if r.rid == rid:
                return r
        raise KeyError(rid)
