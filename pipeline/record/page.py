"""report.html: a self-contained page of one run, written beside report.json whenever the record is saved.

The page is built from the report dict alone: rounds as columns of candidate cards, the winner's lineage, a
score-over-rounds plot, the control arm and the run's settings. Images are referenced by their file names in the
run directory, so the folder can be zipped and opened anywhere (file:// included); nothing is fetched from the
network. Every text from the report is HTML-escaped: prompts come from an LLM and may contain anything.

The builder reads reports of any schema version as far as it can, and says so when the version is newer than
the one it was written for.
"""
from __future__ import annotations

import difflib
import json
import logging
from html import escape
from pathlib import Path
from typing import Optional
from urllib.parse import quote

from .page_assets import SCRIPT, STYLE
from .page_judges import STYLE as JUDGES_STYLE
from .page_judges import evaluation_section, judgements_section
from .page_svg import beam_tree, score_plot
from .journal import JOURNAL_NAME, load_report
from .storage import replacing

log = logging.getLogger(__name__)

PAGE_NAME = "report.html"
READS_SCHEMA_VERSION = 1            # the report.json schema this page was written for (record/report.py)
RELOAD_WHILE_RUNNING_S = 5          # a running search's page reloads itself (a meta refresh: no script needed)
_SEARCH_SETTINGS = ("beam_width", "keep_top", "iterations", "alpha", "seed", "dimension_policy", "seed_policy",
                    "patience", "target_score", "time_budget_s", "width", "height", "steps", "guidance", "sampler",
                    "scheduler", "descriptiveness", "style", "combine_mode", "use_negative", "score_text",
                    "captions", "low_vram", "llm_concurrency", "control_arm", "judge_budget", "judge_margin")
_MODEL_PARTS = ("generator", "scorer", "llm", "critic", "judge")


# ---- files --------------------------------------------------------------------------------------------------------
def write_page(run_dir, report: dict) -> Path:
    """Write report.html for `report` into `run_dir` atomically (a reader never sees half a page)."""
    path = Path(run_dir) / PAGE_NAME
    page = build_page(report).encode("utf-8")
    with replacing(path) as handle:        # the record's own atomic write: a torn .tmp never stays behind
        handle.write(page)
    return path


def ensure_page(run_dir) -> Path:
    """The run's report.html, written first when it is missing or older than report.json (a run recorded before
    pages existed, or a report edited by hand). Raises FileNotFoundError / ValueError for a folder without a
    readable report.json."""
    run_dir = Path(run_dir)
    report_path, page_path = run_dir / "report.json", run_dir / PAGE_NAME
    report_mtime = max(report_path.stat().st_mtime_ns, _mtime_ns(run_dir / JOURNAL_NAME))
    if page_path.is_file() and page_path.stat().st_mtime_ns >= report_mtime:
        return page_path
    return write_page(run_dir, load_report(run_dir))     # with the changes journaled since report.json


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


# ---- the page -----------------------------------------------------------------------------------------------------
def build_page(report: dict) -> str:
    rounds = round_views(report)
    by_id = {c["id"]: c for r in rounds for c in r["candidates"]}
    lineage = [i for i in report.get("lineage") or [] if isinstance(i, str)]
    winner = report.get("best")
    status = str(report.get("status") or "unknown")
    title = f"Prompt Beam · {report.get('user_prompt') or report.get('run_id') or 'run'}"
    refresh = (f'<meta http-equiv="refresh" content="{RELOAD_WHILE_RUNNING_S}">' if status == "running" else "")
    body = [
        _header(report, status),
        _summary(report, rounds, by_id, winner),
        '<h2>Rounds</h2><div class="rounds">',
        *(_round_column(r, by_id, lineage, winner) for r in rounds),
        "</div>",
        judgements_section(report),
        _control_section(report),
        _settings_section(report),
        *(_overlay(c, by_id.get(c.get("parent"))) for r in rounds for c in r["candidates"]),
    ]
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,">'   # no favicon request to whatever server shows the page
            # No network: images from this folder (or the server that serves it) only, inline style and script.
            f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src \'self\' file: '
            f'data:; style-src \'unsafe-inline\'; script-src \'unsafe-inline\'; base-uri \'none\'; '
            f'form-action \'none\'">'
            f"{refresh}<title>{escape(title)}</title><style>{STYLE}{JUDGES_STYLE}</style></head>\n"
            f'<body data-schema-version="{escape(str(report.get("schema_version")))}">\n'
            + "\n".join(body)
            + f"\n<script>{SCRIPT}</script></body></html>\n")


def round_views(report: dict) -> list[dict]:
    """Per round: {iteration, entry (the finished round's record or None), candidates, survivors}. A round in
    flight lists its recorded candidates and then the planned ones not rendered yet (status "pending")."""
    candidates = [c for c in report.get("candidates") or [] if isinstance(c, dict) and "id" in c]
    iterations = [e for e in report.get("iterations") or [] if isinstance(e, dict)]
    pending = report.get("pending") or {}
    recorded = {c["id"] for c in candidates}
    planned = [c for c in pending.get("candidates") or [] if isinstance(c, dict) and c.get("id") not in recorded]
    count = max([len(iterations)] + [int(c.get("iteration", 0)) + 1 for c in candidates + planned])
    views = []
    for k in range(count):
        entry = iterations[k] if k < len(iterations) else None
        members = sorted((c for c in candidates if c.get("iteration") == k), key=lambda c: c.get("index", 0))
        members += [dict(c, status="pending") for c in planned if c.get("iteration") == k]
        views.append({"iteration": k, "entry": entry, "candidates": members,
                      "survivors": list((entry or {}).get("survivors") or [])})
    return views


def _total(candidate: dict) -> Optional[float]:
    scores = candidate.get("scores") or {}
    return scores.get("total") if candidate.get("status") == "ok" else None


def _fmt(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _src(name: str) -> str:
    return escape(quote(name))


# ---- header and summary ------------------------------------------------------------------------------------------
def _header(report: dict, status: str) -> str:
    parts = [f"<header><h1>{escape(report.get('user_prompt') or '(no prompt)')}</h1>",
             f'<div class="sub">run <b>{escape(str(report.get("run_id", "?")))}</b> · '
             f'<span class="chip {escape(status)}">{escape(status)}</span>']
    if report.get("stop_reason"):
        parts.append(f" · stopped: <b>{escape(str(report['stop_reason']))}</b>")
    timings = report.get("timings") or {}
    if timings.get("started_at"):
        parts.append(f" · started {escape(str(timings['started_at']))}")
    parts.append(f" · Prompt Beam {escape(str(report.get('version', '?')))}</div></header>")
    version = report.get("schema_version")
    if not isinstance(version, int) or version > READS_SCHEMA_VERSION:
        parts.append(f'<div class="banner bad" id="schema-warning">This report has schema_version '
                     f'{escape(str(version))}, newer than the version {READS_SCHEMA_VERSION} this page was written '
                     f'for: parts of it may be missing here. report.json has everything.</div>')
    if status == "running":
        parts.append(f'<div class="banner">This search is running; the page reloads every '
                     f'{RELOAD_WHILE_RUNNING_S} s.</div>')
    if report.get("error"):
        parts.append(f'<div class="banner bad">{escape(str(report["error"]))}</div>')
    replay = report.get("replay_of") or {}
    if replay.get("run_id"):
        parts.append(f'<div class="banner">Replay of run <b>{escape(str(replay["run_id"]))}</b>: its recorded '
                     f'prompts and seeds, rendered and scored again.</div>')
    for resumed in report.get("resumed") or []:
        overrides = ", ".join(f"{k}={v}" for k, v in (resumed.get("overrides") or {}).items()) or "no changes"
        parts.append(f'<div class="banner">Resumed after <b>{escape(str(resumed.get("from_stop_reason")))}</b> '
                     f'({escape(overrides)}).</div>')
    for warning in report.get("warnings") or []:
        parts.append(f'<div class="banner">{escape(str(warning))}</div>')
    return "".join(parts)


def _summary(report: dict, rounds: list[dict], by_id: dict, winner: Optional[str]) -> str:
    best = by_id.get(winner)
    parts = ['<div class="summary"><div class="column">']
    if best is not None:
        scores = best.get("scores") or {}
        image = (f'<a href="#view-{escape(best["id"])}"><img class="best-image" src="{_src(best["image"])}" '
                 f'alt="best image"></a>' if best.get("image") else "")
        label = "Winner" if report.get("status") == "finished" else "Best so far"
        parts.append(f'<div class="panel best">{image}<div><div class="sub">{label} · {escape(best["id"])} · '
                     f'seed {escape(str(best.get("seed")))}</div><div class="total">{_fmt(scores.get("total"), 2)}'
                     f'</div><div class="scores">alignment {_fmt(scores.get("alignment"))} · aesthetic '
                     f'{_fmt(scores.get("aesthetic"), 2)}</div><p>{escape(best.get("prompt") or "")}</p></div></div>')
    stats = []
    for r in rounds:
        totals = [t for t in map(_total, r["candidates"]) if t is not None]
        entry_best = (r["entry"] or {}).get("best_total")
        previous = stats[-1]["best"] if stats else None
        best_total = entry_best if entry_best is not None else max(
            [t for t in totals + [previous] if t is not None], default=None)
        stats.append({"iteration": r["iteration"], "totals": totals, "best": best_total,
                      "mean": sum(totals) / len(totals) if totals else None})
    control = report.get("control") or {}
    control_best = control.get("best_total") if control.get("status") == "done" else None
    plot = (f'<div class="panel plot">{score_plot(stats, control_best)}<div class="legend">'
                 f'<span><i style="background:var(--accent)"></i>best total</span>'
                 f'<span><i style="background:var(--what)"></i>mean of the round</span>'
                 + ('<span><i style="background:var(--how)"></i>control arm best (seeds only, same budget)</span>'
                    if control_best is not None else "")
                 + "</div></div>")
    tree_rounds = [[{"id": c["id"], "index": int(c.get("index", 0)), "parent": c.get("parent"),
                     "status": str(c.get("status")), "survivor": c["id"] in r["survivors"], "total": _total(c)}
                    for c in r["candidates"]] for r in rounds]
    lineage = [i for i in report.get("lineage") or [] if i in by_id]
    steps = " → ".join(f'<a href="#view-{escape(i)}">{escape(i)}</a>' for i in lineage)
    parts.append(f'<div class="panel tree">{beam_tree(tree_rounds, lineage, winner)}'
                 f'<div class="legend"><span><i style="background:var(--accent)"></i>winner\'s lineage'
                 f'{": " + steps if steps else ""}</span><span><i style="background:var(--good)"></i>survivor</span>'
                 f'<span><i style="background:var(--bad)"></i>failed</span></div></div>')
    parts.append(f"</div>{plot}</div>")
    return "".join(parts)


# ---- rounds and cards ---------------------------------------------------------------------------------------------
def _round_column(view: dict, by_id: dict, lineage: list, winner: Optional[str]) -> str:
    k, entry = view["iteration"], view["entry"]
    own = {c["id"] for c in view["candidates"]}
    dimension = (entry or {}).get("dimension") or next(
        (c.get("dimension") for c in view["candidates"] if c.get("dimension")), None)
    state = (f'best {_fmt(entry.get("best_total"), 2)}' if entry
             else '<span class="chip running">in progress</span>')
    kind = "expand" if k == 0 else "refine " + escape(str(dimension or "?").upper())
    header = [f"<header><b>Round {k}</b> · {kind} · {state}"]
    carried = [i for i in view["survivors"] if i not in own]
    if carried:
        header.append('<div class="carried">kept from earlier rounds: '
                      + ", ".join(f'<a href="#view-{escape(i)}">{escape(i)}</a> ({_fmt(_total(by_id.get(i, {})))})'
                                  for i in carried) + "</div>")
    duplicates = (entry or {}).get("duplicates") or []
    if duplicates:
        header.append(f'<div class="carried">{len(duplicates)} duplicate prompt(s) dropped before rendering</div>')
    header.append("</header>")
    cards = [_card(c, by_id.get(c.get("parent")), c["id"] in view["survivors"], lineage, winner)
             for c in view["candidates"]]
    return f'<section class="round" data-round="{k}">{"".join(header)}{"".join(cards)}</section>'


def highlight_changes(text: str, before: Optional[str]) -> str:
    """`text` escaped, with the words that are not in `before` (a word-level diff) in <mark>."""
    words = text.split()
    if before is None:
        return escape(text)
    matcher = difflib.SequenceMatcher(None, before.split(), words, autojunk=False)
    out = []
    for op, _, _, j1, j2 in matcher.get_opcodes():
        chunk = escape(" ".join(words[j1:j2]))
        if chunk:
            out.append(chunk if op == "equal" else f"<mark>{chunk}</mark>")
    return " ".join(out)


def _halves(candidate: dict, parent: Optional[dict]) -> str:
    changed = candidate.get("dimension") if parent is not None else None
    out = []
    for half in ("what", "how"):
        text = str(candidate.get(half) or "")
        if half == changed:
            body = highlight_changes(text, str(parent.get(half) or ""))
            out.append(f'<div class="half changed {half}"><b>{half.upper()}</b> (changed) {body}</div>')
        else:
            out.append(f'<div class="half {half}"><b>{half.upper()}</b> {escape(text)}</div>')
    return "".join(out)


def _card(c: dict, parent: Optional[dict], survivor: bool, lineage: list, winner: Optional[str]) -> str:
    cid, status = c["id"], str(c.get("status"))
    classes = ["card", status] + (["survivor"] if survivor else []) + (["lineage"] if cid in lineage else [])
    scores = c.get("scores") or {}
    if c.get("image"):
        picture = f'<img class="thumb" loading="lazy" src="{_src(c["image"])}" alt="{escape(cid)}">'
    else:
        picture = f'<div class="noimg">{"waiting to render" if status == "pending" else "no image"}</div>'
    marks = [] if status == "ok" else [f'<span class="chip {escape(status)}">{escape(status)}</span>']
    if c.get("dimension"):
        marks.append(f'<span class="chip {escape(c["dimension"])}">{escape(str(c["dimension"]).upper())} changed'
                     f'</span>')
    if survivor:
        marks.append('<span class="chip ok survivor-mark">survivor</span>')
    if cid == winner:
        marks.append('<span class="chip running winner-mark">★ best</span>')
    elif cid in lineage:
        marks.append(f'<span class="chip running">lineage {lineage.index(cid) + 1}/{len(lineage)}</span>')
    parts = [f'<a class="{" ".join(classes)}" id="card-{escape(cid)}" href="#view-{escape(cid)}" '
             f'data-id="{escape(cid)}">{picture}<div class="body"><div class="top"><span class="total">'
             f'{_fmt(scores.get("total"))}</span><span class="sub">{escape(cid)}'
             f'{" ← " + escape(str(c["parent"])) if c.get("parent") else ""}</span></div>'
             f'<div class="scores">alignment {_fmt(scores.get("alignment"))} · aesthetic '
             f'{_fmt(scores.get("aesthetic"), 2)}</div><div class="marks">{"".join(marks)}</div>',
             _halves(c, parent)]
    if c.get("error"):
        parts.append(f'<div class="error">{escape(str(c.get("failed_stage") or ""))} {escape(str(c["error"]))}</div>')
    critique = c.get("critique") or {}
    if critique.get("critique") or critique.get("recommendation"):
        parts.append(f'<div class="critique">“{escape(str(critique.get("critique") or ""))}” → '
                     f'{escape(str(critique.get("recommendation") or ""))}</div>')
    parts.append(f'<div class="seed">seed {escape(str(c.get("seed")))}</div></div></a>')
    return "".join(parts)


def _overlay(c: dict, parent: Optional[dict]) -> str:
    cid = escape(c["id"])
    scores = c.get("scores") or {}
    image = (f'<a class="picture" href="{_src(c["image"])}"><img class="full" loading="lazy" '
             f'src="{_src(c["image"])}" alt="{cid}"></a>' if c.get("image")
             else '<div class="picture noimg">no image</div>')
    rows = [("scores", f'total {_fmt(scores.get("total"), 2)} · alignment {_fmt(scores.get("alignment"), 2)} · '
                       f'aesthetic {_fmt(scores.get("aesthetic"), 3)}'),
            ("seed", escape(str(c.get("seed")))), ("status", escape(str(c.get("status"))))]
    if parent is not None:
        rows.append(("parent", f'<a href="#view-{escape(parent["id"])}">{escape(parent["id"])}</a> · '
                               f'{escape(str(c.get("dimension") or "").upper())} refined'))
    if c.get("fallbacks"):
        rows.append(("rule-based fallbacks", escape(", ".join(map(str, c["fallbacks"])))))
    table = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    sections = [f'<h3>Prompt</h3><pre class="prompt">{escape(str(c.get("prompt") or ""))}</pre>',
                f'<button class="copy" type="button" data-copy="{escape(str(c.get("prompt") or ""))}">copy prompt'
                f'</button><button class="copy" type="button" data-copy="{escape(str(c.get("seed")))}">copy seed'
                f'</button>']
    if c.get("negative"):
        sections.append(f'<h3>Negative prompt</h3><pre>{escape(str(c["negative"]))}</pre>')
    sections.append(_halves(c, parent).replace('class="half', 'class="half full-half'))
    critique = c.get("critique") or {}
    if critique:
        sections.append("<h3>Critique of the parent that led here</h3><pre>"
                        + escape("\n".join(f"{k}: {v}" for k, v in critique.items() if v)) + "</pre>")
    sections.append(evaluation_section(c))
    if c.get("caption"):
        sections.append(f'<h3>Caption</h3><pre>{escape(str(c["caption"]))}</pre>')
    if c.get("error"):
        sections.append(f'<h3>Error ({escape(str(c.get("failed_stage")))})</h3><pre class="error">'
                        f'{escape(str(c["error"]))}</pre>')
    return (f'<div class="overlay" id="view-{cid}" role="dialog" aria-label="{cid}"><a class="close" href="#" '
            f'title="close">×</a><div class="inner">{image}<div class="details"><h2 class="id">{cid}</h2><table>{table}'
            f'</table>{"".join(sections)}</div></div></div>')


# ---- control arm and settings -------------------------------------------------------------------------------------
def _control_section(report: dict) -> str:
    control = report.get("control")
    if not isinstance(control, dict):
        return ""
    best = control.get("best") or {}
    delta = control.get("delta_total")
    verdict = ("" if delta is None else
               f' · prompt search {"beat" if delta > 0 else "did not beat"} seed search by {delta:+.2f}')
    figures = []
    scores_list = control.get("scores") or []
    for j, (seed, name) in enumerate(zip(control.get("seeds") or [], control.get("images") or [])):
        scores = scores_list[j] if j < len(scores_list) and isinstance(scores_list[j], dict) else {}
        top = " top" if name and name == best.get("image") else ""
        picture = (f'<a href="{_src(name)}"><img src="{_src(name)}" alt="control {j}"></a>' if name
                   else '<div class="noimg">failed</div>')
        figures.append(f'<figure class="control-image{top}">{picture}<figcaption>{_fmt(scores.get("total"))} · '
                       f'seed {escape(str(seed))}</figcaption></figure>')
    return (f'<h2>Control arm (seeds only, same image budget)</h2><div class="panel"><p>Round 0\'s best prompt '
            f'rendered with {escape(str(control.get("budget")))} new seeds · status '
            f'{escape(str(control.get("status")))} · best {_fmt(control.get("best_total"), 2)} vs beam '
            f'{_fmt(control.get("beam_best_total"), 2)}{verdict}</p><pre>{escape(str(control.get("prompt") or ""))}'
            f'</pre><div class="control-strip">{"".join(figures)}</div></div>')


def _table(title: str, rows: list) -> str:
    body = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(_plain(v))}</td></tr>" for k, v in rows)
    return f'<div class="panel"><h3>{escape(title)}</h3><table>{body}</table></div>'


def _plain(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _settings_section(report: dict) -> str:
    config = report.get("config") or {}
    search = [(k, config[k]) for k in _SEARCH_SETTINGS if k in config]
    models = [(f"{part} · {k}", v) for part in _MODEL_PARTS for k, v in (config.get(part) or {}).items()]
    timings = report.get("timings") or {}
    timing_rows = [(label, timings.get(key)) for key, label in (
        ("llm_s", "LLM (s)"), ("generate_s", "generation (s)"), ("score_s", "scoring (s)"), ("judge_s", "judge (s)"),
        ("wall_s", "wall (s)"), ("compile_s", "compile warm-up (s)"),
        ("started_at", "started"), ("updated_at", "updated"))]
    images, llm = report.get("images") or {}, report.get("llm") or {}
    run_rows = [("status", report.get("status")), ("stop reason", report.get("stop_reason")),
                ("images rendered", images.get("rendered")), ("images failed", images.get("failed")),
                ("image budget", images.get("budget")), ("LLM calls", llm.get("calls")),
                ("LLM fallbacks", llm.get("fallbacks")), ("critic requests", llm.get("critic_calls")),
                ("judge requests", llm.get("judge_calls")), ("schema version", report.get("schema_version")),
                ("Prompt Beam", report.get("version"))]
    per_round = [(f"round {r.get('iteration')}", f"LLM {_plain(r.get('llm_s'))} s · generation "
                  f"{_plain(r.get('generate_s'))} s · scoring {_plain(r.get('score_s'))} s")
                 for r in timings.get("rounds") or [] if isinstance(r, dict)]
    tables = [_table("Run", run_rows), _table("Search settings", search), _table("Timings", timing_rows + per_round)]
    if models:
        tables.append(_table("Models", models))
    return f'<h2>Settings, models and timings</h2><div class="tables">{"".join(tables)}</div>'
