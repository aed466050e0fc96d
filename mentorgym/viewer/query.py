"""The episode query: filters, sort and a page, over every indexed file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mentorgym.viewer.index import Summary, TrajectoryFile

MAX_PAGE = 500


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
