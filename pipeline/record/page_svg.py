"""Inline SVG figures of report.html: the score-over-rounds plot and the beam tree with the winner's lineage.

Both are computed here from the report, so they show with JavaScript off and need no plotting library.
"""
from __future__ import annotations

from html import escape
from typing import Optional, Sequence


def _num(value: float) -> str:
    return f"{value:.1f}"


def score_plot(rounds: Sequence[dict], control_best: Optional[float]) -> str:
    """Best and mean total per round (one point each), every candidate's total as a faint dot, and the control
    arm's best as a dashed line. `rounds`: [{iteration, best, mean, totals}] with best/mean None when unknown."""
    width, height, left, right, top, bottom = 560, 240, 46, 130, 14, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [t for r in rounds for t in r["totals"]]
    values += [r[key] for r in rounds for key in ("best", "mean") if r[key] is not None]
    if control_best is not None:
        values.append(control_best)
    if not values:
        return '<p class="sub">No scores yet.</p>'
    low, high = min(values), max(values)
    span = max(high - low, 1.0)
    low, high = low - 0.08 * span, high + 0.08 * span
    count = max(len(rounds), 1)

    def x(k: int) -> float:
        return left + (plot_w / 2 if count == 1 else plot_w * k / (count - 1))

    def y(value: float) -> float:
        return top + plot_h * (high - value) / (high - low)

    parts = [f'<svg class="score-plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="best and mean total per round">']
    decimals = 1 if (high - low) / 4 >= 0.5 else 2      # grid labels that differ from each other
    for i in range(5):                      # horizontal grid with labels
        value = low + (high - low) * i / 4
        parts.append(f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{_num(y(value))}" '
                     f'y2="{_num(y(value))}"/><text x="{left - 6}" y="{_num(y(value) + 4)}" '
                     f'text-anchor="end">{value:.{decimals}f}</text>')
    for position, entry in enumerate(rounds):
        parts.append(f'<text x="{_num(x(position))}" y="{height - 12}" text-anchor="middle">'
                     f'round {entry["iteration"]}</text>')
        for total in entry["totals"]:
            parts.append(f'<circle class="cand-dot" cx="{_num(x(position))}" cy="{_num(y(total))}" r="2.5"/>')
    if control_best is not None:
        cy = _num(y(control_best))
        parts.append(f'<line class="series-control" x1="{left}" x2="{left + plot_w}" y1="{cy}" y2="{cy}"/>'
                     f'<circle class="control-point" cx="{_num(x(count - 1))}" cy="{cy}" r="4">'
                     f'<title>control arm best {control_best:.2f}</title></circle>'
                     # labelled at the left end: the right end is where the best series ends, often close by
                     f'<text x="{left + 6}" y="{_num(y(control_best) - 5)}">control {control_best:.1f}</text>')
    label_ys: list[float] = []
    for key, label in (("mean", "mean"), ("best", "best")):
        points = [(x(p), y(r[key]), r) for p, r in enumerate(rounds) if r[key] is not None]
        if not points:
            continue
        path = " ".join(f"{_num(px)},{_num(py)}" for px, py, _ in points)
        parts.append(f'<polyline class="series-{key}" points="{path}"/>')
        for px, py, entry in points:
            parts.append(f'<circle class="{key}-point" data-round="{entry["iteration"]}" cx="{_num(px)}" '
                         f'cy="{_num(py)}" r="{4.5 if key == "best" else 3.5}"><title>round {entry["iteration"]} '
                         f'{label} {entry[key]:.2f}</title></circle>')
        last_x, last_y, last = points[-1]
        label_y = last_y + 4
        while any(abs(label_y - other) < 12 for other in label_ys):     # best and mean end close: stack them
            label_y -= 12
        label_ys.append(label_y)
        parts.append(f'<text x="{_num(last_x + 10)}" y="{_num(label_y)}">{label} {last[key]:.1f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def beam_tree(rounds: Sequence[list], lineage: Sequence[str], winner: Optional[str]) -> str:
    """Rounds as columns, each candidate a node (survivors filled, failed red, pending dashed), an edge from each
    parent, and the winner's lineage as one path (#lineage-path) that ends on the winner's node.
    `rounds`: per round, [{id, index, parent, status, survivor, total}]."""
    col, row, left, top, radius = 120, 30, 40, 30, 8
    rows = max((c["index"] for entries in rounds for c in entries), default=0) + 1
    width, height = left * 2 + col * max(len(rounds) - 1, 0) + 40, top + row * rows + 6
    where = {c["id"]: (left + col * k, top + row * c["index"]) for k, entries in enumerate(rounds) for c in entries}
    on_lineage = set(lineage)
    parts = [f'<svg class="beam-tree" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="beam tree">']
    for k in range(len(rounds)):
        parts.append(f'<text x="{left + col * k}" y="14" text-anchor="middle">round {k}</text>')
    for entries in rounds:
        for c in entries:
            if c["parent"] in where:
                (x1, y1), (x2, y2) = where[c["parent"]], where[c["id"]]
                parts.append(f'<path class="edge" d="M{x1},{y1} C{x1 + col / 2},{y1} {x2 - col / 2},{y2} '
                             f'{x2},{y2}"/>')
    path_ids = [i for i in lineage if i in where]
    if path_ids:
        points = " ".join(f"{where[i][0]},{where[i][1]}" for i in path_ids)
        parts.append(f'<polyline id="lineage-path" data-ends="{escape(path_ids[-1])}" points="{points}"/>')
    for entries in rounds:
        for c in entries:
            cx, cy = where[c["id"]]
            classes = ["node", c["status"]]
            classes += ["survivor"] if c["survivor"] else []
            classes += ["lineage"] if c["id"] in on_lineage else []
            classes += ["winner"] if c["id"] == winner else []
            total = "" if c["total"] is None else f" total {c['total']:.2f}"
            label = f'{c["id"]}{total} ({c["status"]}{", survivor" if c["survivor"] else ""})'
            parts.append(f'<a href="#view-{escape(c["id"])}" class="{" ".join(classes)}" data-id="{escape(c["id"])}">'
                         f'<circle cx="{cx}" cy="{cy}" r="{radius + 2 if c["id"] == winner else radius}"/>'
                         f'<title>{escape(label)}</title></a>')
    parts.append("</svg>")
    return "".join(parts)
