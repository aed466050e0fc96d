"""`mentorgym view PATH`: a web viewer for trajectories and training runs.

PATH is a trajectories JSONL, a run directory (what `mentorgym train` writes) or a folder
of runs. The API is FastAPI; the page is static HTML, JS and CSS shipped with the package
(`mentorgym/viewer-static/`), with no front-end build step and nothing fetched from a CDN.

How it stays fast on large files: each trajectory file is indexed by byte offset. One pass
reads every line once and keeps its offset and a small summary (env, success, return,
turns, actor mix); the turns are not kept, and an episode is read back by seeking to its
offset. The index grows as the file grows, so a live run shows new episodes; only complete
lines (ending in a newline) are indexed, and a file that shrank or was rewritten is indexed
again. Text search scans each episode's raw bytes and then checks each candidate's text
fields, so a query for "student" finds what an agent wrote, not the
`actor` key of every turn. `metrics.jsonl` is read from the byte offset the page passes, so
a page watching a live run fetches only the new records.

Everything an agent wrote is data. The API sends it as JSON strings; the page renders it
with `textContent` only, and a Content-Security-Policy forbids inline and foreign scripts
as a second line of defence. A line that is not UTF-8 or not JSON is reported by file and
line in the page instead of failing the request.

Served on 127.0.0.1 by default. Bound to any other address it refuses to start without a
token, and then every request must carry it: `Authorization: Bearer T`, `X-API-Key: T`,
or `?token=T` once in the browser (the page then keeps it in an HttpOnly cookie).
"""

from __future__ import annotations

import json
import mmap
import os
import re
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from mentorgym.errors import ConfigError
from mentorgym.http import Scope, TokenGate, require_token_off_loopback

STATIC_DIR = Path(__file__).parent / "viewer-static"
STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
TOKEN_COOKIE = "mentorgym_view_token"
MAX_PAGE = 500
_ITER_RE = re.compile(r"^iter_(\d+)$")
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


# --- one trajectory file, indexed by byte offset ----------------------------------------------


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
    )


def _decode(raw: bytes) -> Any | str:
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
        d = _decode(raw)
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
        d = _decode(raw)
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


# --- runs and what PATH holds ------------------------------------------------------------------


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
class Run:
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
            d = _decode(raw)
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
        self._runs: dict[Path, Run] = {}
        self._lock = threading.Lock()

    def _file(
        self, path: Path, kind: str, iteration: int | None, run: int | None
    ) -> TrajectoryFile:
        f = self._files.get(path)
        if f is None:
            f = TrajectoryFile(path, len(self._files), kind, iteration, run)
            self._files[path] = f
        return f

    def scan(self) -> tuple[list[Run], list[TrajectoryFile]]:
        """Runs and files under PATH now, each file's index brought up to date."""
        with self._lock:
            runs: list[Run] = []
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
                        run = self._runs[d] = Run(len(self._runs), d.name or str(d), d)
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

    def run(self, rid: int) -> Run:
        for r in self._runs.values():
            if r.rid == rid:
                return r
        raise KeyError(rid)


# --- the episode query -------------------------------------------------------------------------


@dataclass
class Query:
    run: int | None = None
    file: int | None = None
    kind: str | None = None
    env: str | None = None
    success: bool | None = None
    mix: str | None = None
    iteration: int | None = None
    min_return: float | None = None
    max_return: float | None = None
    label_diffs: bool = False
    format_errors: bool = False
    q: str = ""
    sort: str = "file"
    offset: int = 0
    limit: int = 50


def _keep(f: TrajectoryFile, q: Query) -> bool:
    return (
        (q.run is None or f.run == q.run)
        and (q.file is None or f.fid == q.file)
        and (q.kind is None or f.kind == q.kind)
        and (q.iteration is None or f.iteration == q.iteration)
    )


def query_episodes(files: list[TrajectoryFile], q: Query) -> dict[str, Any]:
    """One page of the episodes matching `q`, the total, the facets to filter by, and the bad
    lines of the files looked at."""
    rows: list[tuple[TrajectoryFile, Summary]] = []
    envs: set[str] = set()
    iterations: set[int] = set()
    kinds: set[str] = set()
    bad: list[dict[str, Any]] = []
    for f in files:
        envs.update(s.env_id for s in f.episodes)
        kinds.add(f.kind)
        if f.iteration is not None:
            iterations.add(f.iteration)
        if not _keep(f, q):
            continue
        bad.extend({"file": str(f.path), "line": b.line, "reason": b.reason} for b in f.bad)
        pool = f.episodes if not q.q else [f.episodes[k] for k in f.search(q.q)]
        for s in pool:
            if (
                (q.env is None or s.env_id == q.env)
                and (q.success is None or s.success == q.success)
                and (q.mix is None or s.mix == q.mix)
                and (q.min_return is None or s.return_ >= q.min_return)
                and (q.max_return is None or s.return_ <= q.max_return)
                and (not q.label_diffs or s.label_diffs > 0)
                and (not q.format_errors or s.format_errors > 0)
            ):
                rows.append((f, s))
    if q.sort in ("return", "-return"):
        rows.sort(key=lambda r: r[1].return_, reverse=q.sort == "-return")
    elif q.sort in ("turns", "-turns"):
        rows.sort(key=lambda r: r[1].turns, reverse=q.sort == "-turns")
    limit = max(1, min(q.limit, MAX_PAGE))
    page = rows[q.offset : q.offset + limit]
    return {
        "total": len(rows),
        "offset": q.offset,
        "limit": limit,
        "items": [
            {**s.to_json(), "fid": f.fid, "kind": f.kind, "iteration": f.iteration, "run": f.run}
            for f, s in page
        ],
        "facets": {"envs": sorted(envs), "iterations": sorted(iterations), "kinds": sorted(kinds)},
        "errors": bad[:50],
        "error_count": len(bad),
    }


# --- the app -----------------------------------------------------------------------------------


def check_bind(host: str, token: str | None) -> None:
    require_token_off_loopback(
        host,
        token,
        f"--host {host} serves the viewer beyond this machine: give a token "
        "(--token T or MENTORGYM_TOKEN) that clients send as 'Authorization: Bearer T', or "
        "bind 127.0.0.1",
    )


def _opt_int(v: str | None) -> int | None:
    return int(v) if v not in (None, "") else None


def _opt_float(v: str | None) -> float | None:
    return float(v) if v not in (None, "") else None


def create_app(path: str | os.PathLike[str], token: str | None = None) -> FastAPI:
    """The viewer as an ASGI app (FastAPI) over PATH."""
    catalog = Catalog(Path(path))
    catalog.scan()  # a PATH that cannot be read fails here, before the server starts
    app = FastAPI(title="mentorgym view", docs_url=None, redoc_url=None, openapi_url=None)
    app.middleware("http")(_page_headers(token))
    if token:
        app.add_middleware(TokenGate, token=token, refuse=_refuse, extra_token=_page_token)
    _static_routes(app)
    _catalog_routes(app, catalog)
    _episode_routes(app, catalog)
    return app


def _refuse(scope: Scope) -> PlainTextResponse:
    return PlainTextResponse(
        "mentorgym view: this viewer needs its token. Send 'Authorization: Bearer T', "
        "or open the page once as /?token=T.",
        status_code=401,
    )


def _page_token(scope: Scope) -> str | None:
    """A browser's token: `?token=T` on the first page it opens, then the cookie."""
    request = Request(scope)
    return request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)


def _page_headers(token: str | None) -> Any:
    """Security headers on every answer; a `?token=T` that got in is kept in a cookie."""

    async def headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        if token and request.query_params.get("token") is not None:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    return headers


def _static_routes(app: FastAPI) -> None:
    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/{name}")
    def static(name: str) -> FileResponse:
        if name not in STATIC_FILES:
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name])


def _query_of(p: Any) -> Query:
    """The episode filter from the page's query parameters."""
    try:
        return Query(
            run=_opt_int(p.get("run")),
            file=_opt_int(p.get("file")),
            kind=p.get("kind") or None,
            env=p.get("env") or None,
            success={"1": True, "0": False}.get(p.get("success", "")),
            mix=p.get("mix") or None,
            iteration=_opt_int(p.get("iteration")),
            min_return=_opt_float(p.get("min_return")),
            max_return=_opt_float(p.get("max_return")),
            label_diffs=p.get("label_diffs") == "1",
            format_errors=p.get("format_errors") == "1",
            q=p.get("q", "")[:500],
            sort=p.get("sort", "file"),
            offset=max(0, int(p.get("offset", 0))),
            limit=int(p.get("limit", 50)),
        )
    except ValueError as e:
        raise HTTPException(400, f"bad filter value: {e}") from None


def _catalog_routes(app: FastAPI, catalog: Catalog) -> None:
    @app.get("/api/catalog")
    def api_catalog() -> dict[str, Any]:
        runs, files = catalog.scan()
        return {
            "path": str(catalog.root),
            "runs": [
                {"rid": r.rid, "name": r.name, "path": str(r.path), "fids": r.fids} for r in runs
            ],
            "files": [f.describe() for f in files],
        }

    @app.get("/api/runs/{rid}")
    def api_run(rid: int) -> dict[str, Any]:
        try:
            run = catalog.run(rid)
        except KeyError:
            raise HTTPException(404, f"no run {rid}") from None
        return {"rid": run.rid, "name": run.name, "path": str(run.path), "config": run.config()}

    @app.get("/api/runs/{rid}/metrics")
    def api_metrics(rid: int, offset: int = 0) -> dict[str, Any]:
        try:
            run = catalog.run(rid)
        except KeyError:
            raise HTTPException(404, f"no run {rid}") from None
        return read_metrics(run.path / "metrics.jsonl", max(0, offset))


def _episode_routes(app: FastAPI, catalog: Catalog) -> None:
    @app.get("/api/episodes")
    def api_episodes(request: Request) -> JSONResponse:
        q = _query_of(request.query_params)
        _, files = catalog.scan()
        return JSONResponse(query_episodes(files, q))

    @app.get("/api/episode/{fid}/{k}")
    def api_episode(fid: int, k: int) -> dict[str, Any]:
        try:
            f = catalog.file(fid)
        except KeyError:
            raise HTTPException(404, f"no trajectory file {fid}") from None
        f.refresh()
        if not 0 <= k < len(f.episodes):
            raise HTTPException(404, f"{f.path} holds {len(f.episodes)} episode(s); no episode {k}")
        try:
            episode = f.read(k)
        except ConfigError as e:
            raise HTTPException(409, str(e)) from None
        run = catalog.run(f.run).name if f.run is not None else None
        return {
            "file": f.describe(),
            "run_name": run,
            "summary": f.episodes[k].to_json(),
            "teacher_names": sorted(teacher_names(episode.get("meta") or {})),
            "episode": episode,
        }


def serve(
    path: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
) -> None:
    """Serve the viewer until interrupted; prints the address to open."""
    import uvicorn

    token = token or os.environ.get("MENTORGYM_TOKEN") or None
    check_bind(host, token)
    app = create_app(path, token)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"mentorgym view: {path} at {url}  (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
