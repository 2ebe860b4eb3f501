"""The style sheet and the small script inlined into every report.html (record/page.py).

Everything the page shows is plain HTML and SVG written by Python, so it reads the same with JavaScript off. The
full-size view of a candidate is a CSS :target overlay (a link to #view-<id>), which needs no script either. The
script only adds what cannot work without one: copying a prompt or a seed, and Escape to close the overlay.
"""

STYLE = """
:root { --bg:#111418; --panel:#1a1f26; --card:#202733; --line:#2e3746; --text:#e6e9ee; --dim:#9aa5b5;
  --accent:#f2b84b; --good:#5cc98a; --bad:#ef6f6c; --what:#6fb3ff; --how:#d58cff; --mark:rgba(242,184,75,.28); }
* { box-sizing:border-box; }
html { background:var(--bg); color:var(--text); font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; }
body { margin:0; padding:20px 24px 48px; }
a { color:inherit; }
h1 { font-size:20px; margin:0 0 4px; font-weight:600; }
h2 { font-size:15px; margin:28px 0 10px; color:var(--dim); font-weight:600; text-transform:uppercase;
  letter-spacing:.06em; }
.sub { color:var(--dim); }
.banner { border:1px solid var(--line); border-left:4px solid var(--accent); background:var(--panel);
  padding:8px 12px; margin:12px 0; border-radius:6px; }
.banner.bad { border-left-color:var(--bad); }
.chip { display:inline-block; padding:1px 8px; border-radius:10px; background:var(--line); font-size:12px;
  white-space:nowrap; }
.chip.ok, .chip.finished { background:rgba(92,201,138,.18); color:var(--good); }
.chip.failed, .chip.interrupted { background:rgba(239,111,108,.18); color:var(--bad); }
.chip.running, .chip.pending { background:rgba(242,184,75,.18); color:var(--accent); }
.chip.what { background:rgba(111,179,255,.18); color:var(--what); }
.chip.how { background:rgba(213,140,255,.18); color:var(--how); }
.summary { display:flex; flex-wrap:wrap; gap:20px; align-items:flex-start; margin-top:16px; }
.panel { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.summary .column { display:flex; flex-direction:column; gap:20px; flex:0 1 640px; min-width:320px; }
.best { display:flex; gap:14px; }
.tree { overflow-x:auto; }
.best img { width:160px; height:160px; object-fit:cover; border-radius:6px; flex:none; }
.plot svg, .tree svg { display:block; }
svg text { fill:var(--dim); font:11px system-ui,sans-serif; }
.axis { stroke:var(--line); }
.series-best { stroke:var(--accent); fill:none; stroke-width:2.5; }
.series-mean { stroke:var(--what); fill:none; stroke-width:1.5; stroke-dasharray:5 4; }
.series-control { stroke:var(--how); stroke-width:1.5; stroke-dasharray:2 3; }
.best-point { fill:var(--accent); } .mean-point { fill:var(--what); } .control-point { fill:var(--how); }
.cand-dot { fill:var(--dim); opacity:.35; }
.edge { stroke:var(--line); stroke-width:1.5; fill:none; }
#lineage-path { stroke:var(--accent); stroke-width:3; fill:none; stroke-linejoin:round; }
.node circle { fill:var(--card); stroke:var(--dim); stroke-width:1.5; }
.node.survivor circle { fill:var(--good); stroke:var(--good); }
.node.failed circle { fill:var(--bad); stroke:var(--bad); }
.node.pending circle { stroke-dasharray:2 2; }
.node.lineage circle { stroke:var(--accent); stroke-width:3; }
.node.winner circle { fill:var(--accent); }
.legend { display:flex; gap:14px; flex-wrap:wrap; color:var(--dim); font-size:12px; margin-top:6px; }
.legend i { display:inline-block; width:14px; height:3px; vertical-align:middle; margin-right:4px; }
.rounds { display:flex; gap:14px; overflow-x:auto; padding-bottom:8px; align-items:flex-start; }
.round { flex:0 0 272px; }
.round > header { position:sticky; top:0; background:var(--bg); padding:6px 2px 8px; z-index:1; }
.round > header b { font-size:15px; }
.carried { font-size:12px; color:var(--dim); margin-top:4px; }
.card { display:block; text-decoration:none; background:var(--card); border:1px solid var(--line);
  border-radius:8px; margin-bottom:12px; overflow:hidden; }
.card:hover { border-color:var(--dim); }
.card.survivor { border-color:var(--good); }
.card.lineage { border-color:var(--accent); box-shadow:0 0 0 1px var(--accent); }
.card.failed { border-color:rgba(239,111,108,.6); }
.thumb { display:block; width:100%; aspect-ratio:1; object-fit:cover; background:#000; }
.noimg { display:flex; align-items:center; justify-content:center; aspect-ratio:1; background:#0c0e11;
  color:var(--dim); padding:12px; text-align:center; font-size:12px; }
.card .body { padding:8px 10px 10px; }
.card .top { display:flex; justify-content:space-between; align-items:baseline; gap:6px; }
.total { font-size:18px; font-weight:600; }
.scores { color:var(--dim); font-size:12px; }
.marks { display:flex; gap:4px; flex-wrap:wrap; margin:6px 0; }
.half { font-size:12px; margin:4px 0; color:var(--dim); display:-webkit-box; -webkit-line-clamp:4;
  -webkit-box-orient:vertical; overflow:hidden; }
.half b { color:var(--text); font-weight:600; }
.half.changed { color:var(--text); border-left:3px solid var(--accent); padding-left:6px; }
mark { background:var(--mark); color:inherit; border-radius:2px; }
.critique { font-size:12px; color:var(--dim); font-style:italic; border-top:1px solid var(--line); margin-top:6px;
  padding-top:6px; display:-webkit-box; -webkit-line-clamp:3; -webkit-box-orient:vertical; overflow:hidden; }
.error { color:var(--bad); font-size:12px; word-break:break-word; }
.seed { color:var(--dim); font-size:12px; font-variant-numeric:tabular-nums; }
table { border-collapse:collapse; font-size:13px; }
td, th { text-align:left; padding:3px 12px 3px 0; vertical-align:top; border-bottom:1px solid var(--line); }
th { color:var(--dim); font-weight:500; }
.tables { display:flex; flex-wrap:wrap; gap:16px; align-items:flex-start; }
.control-strip { display:flex; gap:8px; flex-wrap:wrap; }
.control-strip figure { margin:0; width:110px; font-size:12px; color:var(--dim); }
.control-strip img { width:110px; height:110px; object-fit:cover; border-radius:4px; display:block; }
.control-strip figure.top img { outline:2px solid var(--how); }
.overlay { position:fixed; inset:0; background:rgba(10,12,15,.985); z-index:10; overflow:auto; padding:24px; }
.overlay:not(:target) { display:none; }
.overlay .inner { display:flex; gap:24px; flex-wrap:wrap; max-width:1500px; margin:0 auto; }
.overlay .picture { flex:1 1 480px; max-width:900px; }
.overlay .full { display:block; width:100%; max-height:calc(100vh - 48px); object-fit:contain; border-radius:6px; }
.overlay .half { display:block; -webkit-line-clamp:unset; overflow:visible; }
.overlay h2.id { text-transform:none; color:var(--text); font-size:18px; margin:0 0 8px; }
.overlay .details { flex:1 1 360px; min-width:300px; }
.overlay pre { white-space:pre-wrap; word-break:break-word; font:13px/1.5 ui-monospace,Menlo,monospace;
  background:var(--panel); border:1px solid var(--line); border-radius:6px; padding:10px; margin:4px 0 10px; }
.close { position:fixed; top:12px; right:20px; font-size:28px; text-decoration:none; color:var(--dim); }
button.copy { display:none; background:var(--line); color:var(--text); border:0; border-radius:5px;
  padding:5px 10px; margin:0 6px 6px 0; cursor:pointer; font:inherit; font-size:12px; }
html.js button.copy { display:inline-block; }
button.copy.done { background:var(--good); color:#000; }
"""

SCRIPT = """
document.documentElement.classList.add("js");
function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
  const area = document.createElement("textarea");
  area.value = text; area.style.position = "fixed"; area.style.opacity = "0";
  document.body.appendChild(area); area.select();
  try { document.execCommand("copy"); } finally { area.remove(); }
  return Promise.resolve();
}
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  event.preventDefault();
  copyText(button.dataset.copy).then(() => {
    const label = button.textContent;
    button.classList.add("done"); button.textContent = "copied";
    setTimeout(() => { button.classList.remove("done"); button.textContent = label; }, 1200);
  }, () => { button.textContent = "copy failed"; });
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && location.hash.startsWith("#view-")) {
    location.hash = "";     // no :target left, so the overlay hides
  }
});
"""
