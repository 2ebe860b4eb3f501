"""The parts of report.html that show what vision models said: a candidate's evaluation by the critic (in its
full view) and the judge's pairwise verdicts, each with the two images side by side (docs/judges.md)."""
from __future__ import annotations

from html import escape
from urllib.parse import quote

STYLE = """
.evaluation ul { margin:4px 0 8px 18px; padding:0; } .evaluation li { margin:2px 0; }
.evaluation .strengths li::marker { content:"+ "; color:var(--how); }
.evaluation .weaknesses li::marker { content:"− "; color:var(--accent); }
.judgements { display:grid; grid-template-columns:repeat(auto-fill, minmax(420px, 1fr)); gap:12px; }
.judgement { border:1px solid var(--line); border-radius:6px; padding:10px; }
.judgement .pair { display:flex; gap:8px; }
.judgement figure { margin:0; flex:1; text-align:center; font-size:12px; color:var(--dim); }
.judgement figure img { width:100%; aspect-ratio:1; object-fit:cover; border-radius:4px; display:block; }
.judgement figure.won img { outline:3px solid var(--how); }
.judgement .answers { font-size:12px; color:var(--dim); margin:6px 0 0; padding-left:16px; }
.judgement .failed { color:var(--accent); }
"""


def _src(name: str) -> str:
    return escape(quote(name))


def evaluation_section(candidate: dict) -> str:
    """The critic's evaluation of this candidate's image, for its full view ('' when it was never critiqued)."""
    evaluation = candidate.get("evaluation")
    if not isinstance(evaluation, dict):
        return ""
    model = escape(str(evaluation.get("model") or "vision model"))
    if evaluation.get("error"):
        return (f'<h3>What the critic saw ({model})</h3><pre class="error">{escape(str(evaluation["error"]))}'
                f'</pre>')
    lists = "".join(f'<h4>{label}</h4><ul class="{key}">' +
                    "".join(f"<li>{escape(str(point))}</li>" for point in evaluation.get(key) or []) + "</ul>"
                    for key, label in (("strengths", "Strengths"), ("weaknesses", "Weaknesses")))
    return (f'<div class="evaluation"><h3>What the critic saw ({model})</h3>'
            f'<pre>{escape(str(evaluation.get("analysis") or ""))}</pre>{lists}</div>')


def judgements_section(report: dict) -> str:
    """Every pair the judge decided, round by round, with both images and both orders' answers."""
    judgements = [j for j in report.get("judgements") or [] if isinstance(j, dict) and "a" in j and "b" in j]
    if not judgements:
        return ""
    images = {c.get("id"): c.get("image") for c in report.get("candidates") or [] if isinstance(c, dict)}
    cards = [_judgement(j, images) for j in judgements]
    model = escape(str(judgements[-1].get("model") or ""))
    return (f'<h2>Pairwise judge near the cut</h2><div class="panel"><p>{len(judgements)} pair(s) judged by '
            f'{model}, each asked in both orders: a pair whose two answers disagree is a tie. Survivors follow these '
            f'verdicts among the candidates near the keep-top cut.</p><div class="judgements">{"".join(cards)}'
            f'</div></div>')


def _judgement(entry: dict, images: dict) -> str:
    verdict = str(entry.get("verdict"))
    figures = []
    for side in ("a", "b"):
        cid = str(entry.get(side))
        name = images.get(cid)
        picture = (f'<a href="#view-{escape(cid)}"><img loading="lazy" src="{_src(name)}" alt="{escape(cid)}"></a>'
                   if name else '<div class="noimg">no image</div>')
        won = " won" if verdict == side else ""
        figures.append(f'<figure class="{won.strip()}">{picture}<figcaption>{escape(cid)}'
                       f'{" · wins" if won else ""}</figcaption></figure>')
    answers = "".join(f'<li>{escape(str(a.get("first")))} shown first: <b>{escape(str(a.get("winner")))}</b> — '
                      f'{escape(str(a.get("reason") or ""))}</li>' for a in entry.get("answers") or [])
    outcome = {"a": f"{entry.get('a')} wins", "b": f"{entry.get('b')} wins"}.get(verdict, "tie")
    failed = (f'<div class="failed">the judge failed: {escape(str(entry["error"]))}</div>'
              if entry.get("error") else "")
    return (f'<div class="judgement" data-pair="{escape(str(entry.get("a")))}-{escape(str(entry.get("b")))}">'
            f'<div class="sub">round {escape(str(entry.get("iteration")))} · {escape(outcome)} · '
            f'{escape(str(entry.get("seconds")))} s</div><div class="pair">{"".join(figures)}</div>{failed}'
            f'<ul class="answers">{answers}</ul></div>')
