"""`python -m pipeline view [RUN_DIR] [--print]`: open a run's report.html in the browser.

RUN_DIR is a run directory (or its report.json / report.html), or a folder of runs, whose newest run is shown;
without it, the newest run under --out (default ./runs, where `search` writes). A run recorded before pages
existed, or whose report.json is newer than its page, gets its page written first.
"""
from __future__ import annotations

import argparse
import json
import sys
import webbrowser
from pathlib import Path

from ..errors import InvalidParameter, PromptBeamError
from ..record.page import ensure_page
from ..record.run_index import REPORT_NAME, is_run_dir, newest_run


def add_parser(commands, parents) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "view", parents=parents, help="open a run's report page (report.html) in the browser",
        description="Open the report page of a run in the web browser: the rounds, every candidate with its "
                    "image, scores and prompt, the winner's lineage and the score plot.")
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                   help="a run directory, or a folder of runs (its newest run); default: the newest run under --out")
    p.add_argument("--out", metavar="DIR", default="runs",
                   help="root folder of run directories, as for `search` (default: ./runs)")
    p.add_argument("--print", dest="print_only", action="store_true",
                   help="print the page's path instead of opening a browser")
    return p


def find_run(run_dir, out: str) -> Path:
    """The run directory to show; InvalidParameter names what the user typed when there is none."""
    if run_dir is None:
        newest = newest_run(out)
        if newest is None:
            raise InvalidParameter("out", f"no runs under {out} (a run directory holds a {REPORT_NAME}); "
                                          f"run `python -m pipeline search PROMPT` first, or pass RUN_DIR")
        return newest
    path = Path(run_dir)
    if path.is_file() and path.name in (REPORT_NAME, "report.html"):
        path = path.parent
    if is_run_dir(path):
        return path
    if path.is_dir():
        newest = newest_run(path)
        if newest is not None:
            return newest
        raise InvalidParameter("run_dir", f"{path} has no {REPORT_NAME} and no run directories")
    raise InvalidParameter("run_dir", f"{path} does not exist")


def run(args: argparse.Namespace) -> int:
    run_dir = find_run(args.run_dir, args.out)
    try:
        page = ensure_page(run_dir).resolve()
    except (OSError, ValueError) as exc:
        detail = f"invalid JSON ({exc.msg} at line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else exc
        raise PromptBeamError(f"cannot show {run_dir}: {run_dir / REPORT_NAME}: {detail}") from None
    print(page, flush=True)
    if not args.print_only and not webbrowser.open(page.as_uri()):
        print(f"no web browser found; open {page.as_uri()} yourself", file=sys.stderr, flush=True)
    return 0
