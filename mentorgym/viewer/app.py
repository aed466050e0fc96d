"""The viewer's app: the page, its JSON API, the token gate, and `serve`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from mentorgym.errors import ConfigError
from mentorgym.http import Scope, TokenGate, require_token_off_loopback
from mentorgym.viewer.catalog import Catalog, read_metrics
from mentorgym.viewer.index import teacher_names
from mentorgym.viewer.query import Query, query_episodes

STATIC_DIR = Path(__file__).parent.parent / "viewer-static"
STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
TOKEN_COOKIE = "mentorgym_view_token"
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


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
