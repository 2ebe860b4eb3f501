"""The run directories under one root (`./runs` for the CLI, output/promptbeam for ComfyUI): newest first, each
with what a list of runs shows (prompt, status, best total and image), and that list as a small HTML page.

A folder is a run when it holds a report.json. A report that cannot be read is listed with its error rather than
hidden, so a damaged run is still found.
"""
from __future__ import annotations

import re
from html import escape
from pathlib import Path
from typing import Optional
from urllib.parse import quote

from .page_assets import STYLE

from .journal import load_report

REPORT_NAME = "report.json"
# The names RunRecord.create accepts (record/report.py): one path segment, never "." or "..".
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / REPORT_NAME).is_file()


def summarize(run_dir: Path) -> dict:
    """What a list shows of one run. `started` orders the list (the report's start time, else the folder's)."""
    run_dir = Path(run_dir)
    summary = {"run_id": run_dir.name, "user_prompt": None, "status": None, "stop_reason": None, "best": None,
               "best_total": None, "best_image": None, "candidates": 0, "rounds": 0, "updated_at": None,
               "started": None, "error": None}
    try:
        report = load_report(run_dir)                 # report.json and its journal (record/journal.py)
    except (OSError, ValueError) as exc:
        summary["error"] = f"report.json unreadable: {exc}"
        return summary
    timings = report.get("timings") or {}
    candidates = [c for c in report.get("candidates") or [] if isinstance(c, dict)]
    best = next((c for c in candidates if c.get("id") == report.get("best")), None)
    summary.update(user_prompt=report.get("user_prompt"), status=report.get("status"),
                   stop_reason=report.get("stop_reason"), best=report.get("best"),
                   candidates=len(candidates), rounds=len(report.get("iterations") or []),
                   updated_at=timings.get("updated_at"), started=timings.get("started_at"))
    if best is not None:
        summary["best_total"] = (best.get("scores") or {}).get("total")
        summary["best_image"] = best.get("image")
    return summary


def list_runs(root) -> list[dict]:
    """Summaries of the run directories directly under `root`, newest first (missing root: none)."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs, real_root = [], root.resolve()
    for path in root.iterdir():
        # A symlink to a folder elsewhere is not one of these runs (and the ComfyUI routes would not serve it).
        if RUN_ID.fullmatch(path.name) and is_run_dir(path) and path.resolve().parent == real_root:
            summary = summarize(path)
            summary["_mtime"] = (path / REPORT_NAME).stat().st_mtime
            runs.append(summary)
    # ISO start times sort as text; a run without one sorts by its report's modification time.
    runs.sort(key=lambda s: (s["started"] or "", s["_mtime"], s["run_id"]), reverse=True)
    for summary in runs:
        del summary["_mtime"]
    return runs


def newest_run(root) -> Optional[Path]:
    runs = list_runs(root)
    return Path(root) / runs[0]["run_id"] if runs else None


def runs_page(runs: list[dict], link_prefix: str = "", title: str = "Prompt Beam runs") -> str:
    """The list of runs as HTML; each entry links to `<link_prefix><run_id>/` (relative to the list's URL)."""
    rows = []
    for run in runs:
        link = link_prefix + quote(run["run_id"]) + "/"
        # The best images are full-size PNGs: only those scrolled into view are fetched.
        picture = (f'<img class="thumb" loading="lazy" src="{escape(link + quote(run["best_image"]))}" '
                   f'alt="best image">'
                   if run["best_image"] else '<div class="noimg">no image</div>')
        total = "–" if run["best_total"] is None else f'{run["best_total"]:.1f}'
        status = escape(str(run["status"] or "unknown"))
        detail = (escape(run["error"]) if run["error"] else
                  f'{run["rounds"]} round(s) · {run["candidates"]} candidates · best {total}'
                  f'{" · " + escape(str(run["stop_reason"])) if run["stop_reason"] else ""}')
        rows.append(f'<a class="card run" href="{escape(link)}" data-run="{escape(run["run_id"])}">{picture}'
                    f'<div class="body"><div class="top"><span class="chip {status}">{status}</span>'
                    f'<span class="sub">{escape(str(run["started"] or ""))}</span></div>'
                    f'<p>{escape(run["user_prompt"] or "(no prompt)")}</p><div class="sub">'
                    f'{escape(run["run_id"])}</div><div class="scores">{detail}</div></div></a>')
    body = ("".join(rows) if rows else
            '<p class="sub">No runs yet: a Prompt Beam Search writes one folder per run here.</p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>{escape(title)}</title><style>{STYLE}"
            ".runs { display:grid; grid-template-columns:repeat(auto-fill, minmax(220px, 1fr)); gap:14px; }"
            ".runs p { margin:6px 0; }</style></head>\n"
            f"<body><h1>{escape(title)}</h1><p class=\"sub\">{len(runs)} run(s), newest first</p>"
            f"<div class=\"runs\">{body}</div></body></html>\n")
