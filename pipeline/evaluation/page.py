"""eval.html: an evaluation on one page, rewritten with eval.json after every judged prompt.

First the answer (the win rate of the beam against the seed-only control, its 95 % interval, each judge's tally
and mean gain) and a plot of the win rates with their intervals; then, prompt by prompt, the two winners side by
side with every judge's verdict. Images are referenced by their paths inside the eval folder (runs/p000/...), so
the folder opens anywhere, file:// included, with nothing fetched from the network; the page needs no script.
Every text from the record is HTML-escaped (prompts and a vision model's reasons may contain anything).
"""
from __future__ import annotations

from html import escape
from typing import Optional, Sequence
from urllib.parse import quote

STYLE = """
:root { --bg:#111418; --panel:#1a1f26; --card:#202733; --line:#2e3746; --text:#e6e9ee; --dim:#9aa5b5;
  --accent:#f2b84b; --beam:#5cc98a; --control:#6fb3ff; --tie:#9aa5b5; }
* { box-sizing:border-box; }
html { background:var(--bg); color:var(--text); font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; }
body { margin:0; padding:20px 24px 48px; max-width:1200px; }
h1 { font-size:20px; margin:0 0 4px; font-weight:600; }
h2 { font-size:15px; margin:28px 0 10px; color:var(--dim); font-weight:600; text-transform:uppercase;
  letter-spacing:.06em; }
a { color:inherit; }
.sub { color:var(--dim); }
.panel { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:12px 14px; margin:12px 0; }
.headline { font-size:28px; font-weight:600; }
.chip { display:inline-block; padding:1px 8px; border-radius:10px; background:var(--line); font-size:12px; }
.chip.beam { background:rgba(92,201,138,.18); color:var(--beam); }
.chip.control { background:rgba(111,179,255,.18); color:var(--control); }
.chip.tie, .chip.running { background:rgba(154,165,181,.18); color:var(--tie); }
.chip.interrupted { background:rgba(242,184,75,.18); color:var(--accent); }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--dim); font-weight:500; }
td.num { font-variant-numeric:tabular-nums; }
svg text { fill:var(--dim); font:11px system-ui,sans-serif; }
.axis { stroke:var(--line); } .even { stroke:var(--accent); stroke-dasharray:4 3; }
.whisker { stroke:var(--text); stroke-width:2; } .rate { fill:var(--beam); }
.prompt { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px;
  margin-bottom:16px; }
.prompt > header { display:flex; gap:8px; align-items:center; flex-wrap:wrap; }
.prompt > p { margin:8px 0; }
.pair { display:flex; gap:14px; flex-wrap:wrap; }
figure { margin:0; flex:1 1 300px; max-width:360px; }
figure img { width:100%; height:auto; border-radius:6px; display:block; background:var(--panel); }
figure.winner img { outline:3px solid var(--beam); }
figcaption { color:var(--dim); font-size:12px; margin-top:4px; }
.note { color:var(--dim); font-size:12px; }
"""


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _interval(ci: Optional[Sequence[float]]) -> str:
    return "–" if not ci else f"{100 * ci[0]:.0f}–{100 * ci[1]:.0f} %"


def _num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _src(path: str) -> str:
    return quote(path, safe="/")


def build_page(data: dict) -> str:
    summary = data.get("summary") or {}
    judges = data.get("judges") or []
    parts = ['<!doctype html><html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f'<title>Prompt Beam eval {escape(str(data.get("eval_id", "")))}</title><style>{STYLE}</style></head>',
             "<body>", _header(data, summary), _summary(summary, judges), '<h2>Win rates</h2><div class="panel">',
             win_rate_plot(_plot_rows(summary, judges)), "</div>", "<h2>Prompts</h2>"]
    parts += [_prompt(entry, judges) for entry in data.get("prompts") or []]
    parts.append(_failed(data.get("failed") or []))
    parts.append("</body></html>")
    return "\n".join(parts)


def _header(data: dict, summary: dict) -> str:
    status = str(data.get("status") or "running")
    settings = data.get("settings") or {}
    search = settings.get("search") or {}
    planned = len(data.get("plan") or [])
    source = (settings.get("prompts") or {}).get("source", "")
    return (f'<h1>Beam search against seeds only, at the same image budget</h1>'
            f'<div class="sub">{escape(str(data.get("eval_id", "")))} · <span class="chip {escape(status)}">'
            f'{escape(status)}</span> · {summary.get("n", 0)} of {planned} prompts judged · {escape(str(source))}'
            f' · beam width {escape(str(search.get("beam_width")))}, keep {escape(str(search.get("keep_top")))}, '
            f'{escape(str(search.get("iterations")))} rounds · the search ranked by '
            f'{escape(", ".join(settings.get("scorers") or ["clip"]))}</div>')


def _summary(summary: dict, judges: list) -> str:
    rows = []
    per_judge = summary.get("per_judge") or {}
    for judge in judges:
        name = judge["name"]
        tally = per_judge.get(name) or {}
        rows.append(f'<tr><td><b>{escape(name)}</b><div class="note">{escape(judge.get("description", ""))}</div>'
                    f'</td><td class="num">{tally.get("beam_wins", 0)}</td><td class="num">'
                    f'{tally.get("control_wins", 0)}</td><td class="num">{tally.get("ties", 0)}</td>'
                    f'<td class="num">{_pct(tally.get("win_rate"))}</td><td class="num">'
                    f'{_interval(tally.get("ci95"))}</td><td class="num">'
                    f'{_num((summary.get("mean_gain") or {}).get(name))}</td></tr>')
    return (f'<div class="panel"><div class="headline">beam wins {_pct(summary.get("win_rate"))}</div>'
            f'<div class="sub">95 % interval {_interval(summary.get("ci95"))} (bootstrap over prompts) · beam '
            f'{summary.get("beam_wins", 0)}, control {summary.get("control_wins", 0)}, ties {summary.get("ties", 0)} '
            f'(a tie counts half) · {summary.get("images", 0)} images · {summary.get("seconds", 0):.0f} s</div>'
            '<table style="margin-top:10px"><tr><th>judge (held out)</th><th>beam</th><th>control</th><th>ties</th>'
            '<th>win rate</th><th>95 % interval</th><th>mean gain</th></tr>' + "".join(rows) + "</table></div>")


def _plot_rows(summary: dict, judges: list) -> list:
    rows = [("all judges", summary)]
    rows += [(f"judge {j['name']}", (summary.get("per_judge") or {}).get(j["name"]) or {}) for j in judges]
    rows += [(f"{category}", tally) for category, tally in (summary.get("by_category") or {}).items()]
    return [(label, tally.get("win_rate"), tally.get("ci95"), tally.get("n", 0)) for label, tally in rows]


def win_rate_plot(rows: Sequence[tuple]) -> str:
    """One line per row (label, win rate, [low, high], n): the rate as a dot, its interval as a whisker, and 50 %
    (neither arm better) as a dashed line."""
    left, right, row_h, top = 170, 70, 22, 24
    width = 640
    plot_w = width - left - right
    height = top + row_h * len(rows) + 8

    def x(value: float) -> float:
        return left + plot_w * value

    parts = [f'<svg class="win-plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             'aria-label="win rate of the beam with its 95 % interval">']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line class="{"even" if tick == 0.5 else "axis"}" x1="{x(tick):.1f}" x2="{x(tick):.1f}" '
                     f'y1="{top - 6}" y2="{height - 4}"/><text x="{x(tick):.1f}" y="{top - 10}" '
                     f'text-anchor="middle">{100 * tick:.0f} %</text>')
    for position, (label, rate, ci, n) in enumerate(rows):
        y = top + row_h * position + row_h / 2
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>')
        if rate is None:
            continue
        if ci:
            parts.append(f'<line class="whisker" x1="{x(ci[0]):.1f}" x2="{x(ci[1]):.1f}" y1="{y:.1f}" '
                         f'y2="{y:.1f}"/>')
        parts.append(f'<circle class="rate" cx="{x(rate):.1f}" cy="{y:.1f}" r="5"><title>{escape(label)}: '
                     f'{_pct(rate)} ({_interval(ci)}), {n} prompts</title></circle>'
                     f'<text x="{width - right + 8}" y="{y + 4:.1f}">{_pct(rate)} · {n}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _prompt(entry: dict, judges: list) -> str:
    verdict = entry.get("verdict", "tie")
    beam, control = entry.get("beam") or {}, entry.get("control") or {}
    figures = []
    for arm, side in (("beam", beam), ("control", control)):
        total = (side.get("scores") or {}).get("total")
        figures.append(f'<figure class="{arm}{" winner" if verdict == arm else ""}"><img src="{_src(side["image"])}" '
                       f'alt="{arm} winner"><figcaption>{arm} · {escape(str(side.get("best")))} · total '
                       f'{_num(total, 2)}</figcaption></figure>')
    rows = []
    for judge in judges:
        name = judge["name"]
        scores = (entry.get("judge_scores") or {}).get(name) or {}
        note = (entry.get("notes") or {}).get(name, "")
        said = (entry.get("verdicts") or {}).get(name, "tie")
        rows.append(f'<tr><td>{escape(name)}</td><td><span class="chip {escape(said)}">{escape(said)}</span></td>'
                    f'<td class="num">{_num(scores.get("beam"))}</td><td class="num">{_num(scores.get("control"))}'
                    f'</td><td class="note">{escape(note)}</td></tr>')
    run = escape(_src(beam.get("run_dir", "")))
    return (f'<section class="prompt" id="p{entry["index"]}"><header><b>#{entry["index"] + 1}</b>'
            f'<span class="chip">{escape(entry.get("category") or "no category")}</span>'
            f'<span class="chip {escape(verdict)}">{escape(verdict)}</span>'
            f'<a class="sub" href="{run}/report.html">run record</a>'
            + ('<span class="note">both arms kept the same image (round 0\'s best): a tie for every judge that '
               'looks at the pixels</span>' if entry.get("same_image") else "") + '</header>'
            f'<p>{escape(entry["prompt"])}</p><div class="pair">{"".join(figures)}</div>'
            '<table style="margin-top:8px"><tr><th>judge</th><th>verdict</th><th>beam</th><th>control</th>'
            '<th></th></tr>' + "".join(rows) + "</table></section>")


def _failed(failed: list) -> str:
    if not failed:
        return ""
    rows = "".join(f'<tr><td>#{f["index"] + 1}</td><td>{escape(f["prompt"])}</td><td class="note">'
                   f'{escape(f["error"])}</td></tr>' for f in failed)
    return ("<h2>Prompts without a result</h2><div class=\"panel\"><p class=\"sub\">Nothing of these could be "
            "rendered or scored; --resume tries them again.</p><table>" + rows + "</table></div>")
