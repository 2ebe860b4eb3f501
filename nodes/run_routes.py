"""The run viewer on ComfyUI's server: the runs the search node wrote under output/promptbeam/, and each run's
report page with its images.

GET /promptbeam/runs                      the runs, newest first, as a page (?format=json: as JSON)
GET /promptbeam/runs/<run_id>/            the run's report.html (written first if missing or stale)
GET /promptbeam/runs/<run_id>/<file>      report.json, report.html and the run's PNGs, nothing else

A run id must be a name RunRecord could have made (one path segment, never "." or ".."), the folder must be a
direct child of output/promptbeam once symlinks are resolved, and a file name must be one a run writes. Anything
else is answered 404, so nothing outside output/promptbeam is ever read.
"""
from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Optional

import folder_paths

from ..pipeline.record.page import PAGE_NAME, ensure_page
from ..pipeline.record.run_index import RUN_ID, is_run_dir, list_runs, runs_page
from .search_node import RUNS_SUBFOLDER, VIEWER_ROUTE

try:
    from server import PromptServer
except ImportError:        # not running inside ComfyUI: there is no server to add routes to
    PromptServer = None

log = logging.getLogger(__name__)
RUNS_ROUTE = VIEWER_ROUTE
RUN_ROUTE = RUNS_ROUTE + "/{run_id}"
RUN_PAGE_ROUTE = RUN_ROUTE + "/"
RUN_FILE_ROUTE = RUN_ROUTE + "/{name}"
_RUN_FILE = re.compile(r"(?:i\d+c\d+|control_\d+)\.png|report\.json|report\.html")
_CONTENT_TYPES = {".png": "image/png", ".json": "application/json", ".html": "text/html"}
# Pages and reports change while a run goes on, and a PNG gets its A1111 chunk when it becomes the best.
_NO_STORE = {"Cache-Control": "no-store"}


def runs_root() -> Path:
    return Path(folder_paths.get_output_directory()) / RUNS_SUBFOLDER


def run_url(run_id: str) -> str:
    return f"{RUNS_ROUTE}/{run_id}/"


def find_run_dir(run_id: str) -> Optional[Path]:
    """The run folder for an id from a URL, or None when the id is not a run under output/promptbeam."""
    if not RUN_ID.fullmatch(run_id or ""):
        return None
    try:
        root = runs_root().resolve(strict=True)
        run_dir = (root / run_id).resolve(strict=True)
    except OSError:
        return None
    return run_dir if run_dir.parent == root and is_run_dir(run_dir) else None


def find_run_file(run_id: str, name: str) -> Optional[Path]:
    run_dir = find_run_dir(run_id)
    if run_dir is None or not _RUN_FILE.fullmatch(name or ""):
        return None
    try:
        path = (run_dir / name).resolve(strict=True)
    except OSError:
        return None
    return path if path.parent == run_dir and path.is_file() else None


def runs_payload() -> dict:
    runs = list_runs(runs_root())
    for run in runs:
        run["url"] = run_url(run["run_id"])
        run["thumbnail"] = run["url"] + run["best_image"] if run["best_image"] else None
    return {"runs": runs, "root": str(runs_root())}


def _not_found(what: str):
    from aiohttp import web
    return web.Response(status=404, text=f"Prompt Beam: {what}", headers=_NO_STORE)


async def list_runs_route(request):
    from aiohttp import web

    payload = await asyncio.to_thread(runs_payload)
    if request.query.get("format") == "json":
        return web.json_response(payload, headers=_NO_STORE)
    # Links relative to /promptbeam/ (the list's folder), so they hold behind a proxy that adds a path prefix.
    html = runs_page(payload["runs"], link_prefix="runs/")
    return web.Response(text=html, content_type="text/html", headers=_NO_STORE)


async def run_redirect_route(request):
    """/promptbeam/runs/<id> -> .../<id>/: the page refers to its images relative to the folder."""
    from aiohttp import web

    run_id = request.match_info.get("run_id", "")
    if find_run_dir(run_id) is None:
        return _not_found(f"no run {run_id!r} under output/{RUNS_SUBFOLDER}")
    raise web.HTTPFound(f"{run_id}/")


async def run_page_route(request):
    return await _serve(request.match_info.get("run_id", ""), PAGE_NAME)


async def run_file_route(request):
    return await _serve(request.match_info.get("run_id", ""), request.match_info.get("name", ""))


async def _serve(run_id: str, name: str):
    from aiohttp import web

    run_dir = find_run_dir(run_id)
    if run_dir is None:
        return _not_found(f"no run {run_id!r} under output/{RUNS_SUBFOLDER}")
    if name == PAGE_NAME:
        try:
            await asyncio.to_thread(ensure_page, run_dir)
        except (OSError, ValueError) as exc:
            log.warning("Prompt Beam: cannot build the page of %s: %s", run_dir, exc)
            return web.Response(status=500, text=f"Prompt Beam: {run_id}/report.json cannot be read: {exc}")
    path = find_run_file(run_id, name)
    if path is None:
        return _not_found(f"no file {name!r} in run {run_id!r}")
    body = await asyncio.to_thread(path.read_bytes)
    return web.Response(body=body, content_type=_CONTENT_TYPES[path.suffix],
                        charset="utf-8" if path.suffix != ".png" else None, headers=_NO_STORE)


ROUTES = ((RUNS_ROUTE, list_runs_route), (RUN_ROUTE, run_redirect_route), (RUN_PAGE_ROUTE, run_page_route),
          (RUN_FILE_ROUTE, run_file_route))


def register(prompt_server) -> bool:
    """Add the routes to a ComfyUI PromptServer (None: nothing to do); adding them twice is a no-op."""
    if prompt_server is None:
        return False
    routes = prompt_server.routes
    if any(getattr(route, "method", None) == "GET" and getattr(route, "path", None) == RUNS_ROUTE
           for route in routes):
        return False
    for path, handler in ROUTES:
        routes.get(path)(handler)
    return True


register(getattr(PromptServer, "instance", None))
