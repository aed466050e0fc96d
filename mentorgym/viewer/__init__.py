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

from mentorgym.viewer.app import STATIC_DIR, check_bind, create_app, serve
from mentorgym.viewer.catalog import Catalog, RunFolder, is_run_dir, read_metrics
from mentorgym.viewer.index import BadLine, Summary, TrajectoryFile, teacher_names
from mentorgym.viewer.query import Query, query_episodes

__all__ = [
    "STATIC_DIR",
    "BadLine",
    "Catalog",
    "Query",
    "RunFolder",
    "Summary",
    "TrajectoryFile",
    "check_bind",
    "create_app",
    "is_run_dir",
    "query_episodes",
    "read_metrics",
    "serve",
    "teacher_names",
]
