"""report.html (pipeline/record/page.py) on real recorded runs: what each kind of run shows, escaping, the schema
version notice, and that the page follows report.json during a run. The same pages in a real browser:
tests/record/test_report_page_browser.py."""
import json
import os
from html.parser import HTMLParser

import pytest

from pipeline import record as record_module
from pipeline.beam import BeamSearch, SearchCallbacks
from pipeline.record.page import (PAGE_NAME, READS_SCHEMA_VERSION, build_page, ensure_page, highlight_changes,
                                  round_views)

from tests.fixtures import recorded_runs
from tests.beam.test_beam_collaborators import FastOps, HashGenerator, StatsScorer

XSS_PROMPT = '<script>alert("pwned")</script> ein Fuchs 🦊 im Schnee — 狐 & "quotes"'


class Page(HTMLParser):
    """The parsed page: every start tag as (tag, attrs) in order, the text of the document, the script bodies."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.texts, self.scripts, self._in_script = [], [], [], False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.texts).append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.texts).split())

    def find(self, tag=None, cls=None, **attrs):
        return [a for t, a in self.tags if (tag is None or t == tag)
                and (cls is None or cls in (a.get("class") or "").split())
                and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]


def page_of(result) -> Page:
    path = result.run_dir / PAGE_NAME
    assert path.is_file()
    return Page(path.read_text(encoding="utf-8"))


def report_of(result) -> dict:
    return json.loads((result.run_dir / "report.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return recorded_runs.full_run(tmp_path_factory.mktemp("runs"))


def test_the_page_has_a_card_per_candidate_in_round_columns(full):
    page, report = page_of(full), report_of(full)
    rounds = page.find("section", cls="round")
    assert [r["data-round"] for r in rounds] == ["0", "1", "2"]
    cards = page.find("a", cls="card")
    assert [c["data-id"] for c in cards] == [c["id"] for c in sorted(
        report["candidates"], key=lambda c: (c["iteration"], c["index"]))]
    ok = [c for c in report["candidates"] if c["status"] == "ok"]
    thumbs = page.find("img", cls="thumb")
    assert sorted(t["src"] for t in thumbs) == sorted(c["image"] for c in ok)      # relative file names
    for c in ok:
        assert f"{c['scores']['total']:.1f}" in page.text and f"seed {c['seed']}" in page.text
    # every card opens its full-size view, which has the full prompt and the copy buttons
    for c in report["candidates"]:
        (overlay,) = page.find("div", cls="overlay", id=f"view-{c['id']}")
        assert page.find("button", cls="copy", data_copy=c["prompt"])
        assert page.find("button", cls="copy", data_copy=str(c["seed"]))


def test_a_failed_candidate_shows_its_error_and_no_image(full):
    page, report = page_of(full), report_of(full)
    (failed,) = [c for c in report["candidates"] if c["status"] == "failed"]
    (card,) = page.find("a", cls="card", data_id=failed["id"])
    assert "failed" in card["class"].split()
    assert not page.find("img", src=f"{failed['id']}.png")
    assert failed["error"] in page.text and failed["error"].startswith("GenerationFailed")


def test_survivors_are_marked_per_round_and_the_lineage_ends_at_the_winner(full):
    page, report = page_of(full), report_of(full)
    for entry in report["iterations"]:
        own = set(entry["candidates"])
        marked = {c["data-id"] for c in page.find("a", cls="survivor")
                  if c["data-id"] in own and "card" in c["class"]}
        assert marked == own & set(entry["survivors"])
    (path,) = page.find("polyline", id="lineage-path")
    assert path["data-ends"] == report["best"] == report["lineage"][-1]
    assert len(path["points"].split()) == len(report["lineage"])
    assert {c["data-id"] for c in page.find("a", cls="lineage") if "card" in c["class"]} == set(report["lineage"])
    (winner,) = page.find("a", cls="winner")
    assert winner["data-id"] == report["best"]


def test_a_child_highlights_the_half_it_changed(full):
    report = report_of(full)
    child = next(c for c in report["candidates"] if c["parent"] and c["status"] == "ok")
    html_text = (full.run_dir / PAGE_NAME).read_text(encoding="utf-8")
    assert f'class="half changed {child["dimension"]}"' in html_text
    assert child["critique"]["critique"].replace("'", "&#x27;") in html_text


def test_the_plot_has_one_best_and_one_mean_point_per_round_and_the_control_arm(full):
    page, report = page_of(full), report_of(full)
    best_points = page.find("circle", cls="best-point")
    assert [p["data-round"] for p in best_points] == ["0", "1", "2"]
    assert len(page.find("circle", cls="mean-point")) == 3
    assert len(page.find("circle", cls="control-point")) == 1
    control = report["control"]
    assert f"control {control['best_total']:.1f}" in page.text
    assert len(page.find("figure", cls="control-image")) == len(control["seeds"])
    # best never decreases, and the plot's points say so (smaller y is higher)
    ys = [float(p["cy"]) for p in best_points]
    assert ys == sorted(ys, reverse=True)


def test_settings_models_timings_and_stop_reason_are_shown(full):
    page = page_of(full)
    text = page.text
    for label in ("beam_width", "keep_top", "alpha", "generator · model", "hash-generator", "LLM (s)",
                  "generation (s)", "scoring (s)", "max_iterations"):
        assert label in text


def test_one_round_only(tmp_path):
    result = recorded_runs.one_round_run(tmp_path)
    page, report = page_of(result), report_of(result)
    assert len(page.find("section", cls="round")) == 1
    assert len(page.find("circle", cls="best-point")) == 1
    (path,) = page.find("polyline", id="lineage-path")
    assert path["data-ends"] == report["best"] and len(path["points"].split()) == 1
    assert not page.find("figure", cls="control-image") and "Control arm" not in page.text


def test_an_interrupted_run_shows_its_pending_round_and_the_resumed_run_the_same_page(tmp_path):
    interrupted = recorded_runs.interrupted_run(tmp_path / "a")
    page, report = page_of(interrupted), report_of(interrupted)
    assert report["status"] == "interrupted" and report["pending"]
    pending_ids = {c["id"] for c in report["pending"]["candidates"]}
    assert {c["data-id"] for c in page.find("a", cls="pending")} == pending_ids
    assert "in progress" in page.text and "waiting to render" in page.text

    resumed = recorded_runs.resumed_run(tmp_path / "b")
    page, report = page_of(resumed), report_of(resumed)
    assert [r["data-round"] for r in page.find("section", cls="round")] == ["0", "1", "2", "3"]
    assert not page.find("a", cls="pending")
    assert "Resumed after interrupted" in page.text and "iterations=4" in page.text
    (path,) = page.find("polyline", id="lineage-path")
    assert path["data-ends"] == report["best"]


def test_a_replay_says_what_it_replays(full, tmp_path):
    replay = BeamSearch.replay(full.run_dir, HashGenerator(), StatsScorer(), tmp_path, run_id="again")
    page = page_of(replay)
    assert f"Replay of run {full.run_dir.name}" in " ".join(page.text.split())
    assert len(page.find("a", cls="card")) == len(report_of(replay)["candidates"])


def test_prompts_are_escaped_and_unicode_kept(tmp_path):
    result = recorded_runs.full_run(tmp_path, prompt=XSS_PROMPT)
    html_text = (result.run_dir / PAGE_NAME).read_text(encoding="utf-8")
    page = Page(html_text)
    assert len(page.find("script")) == 1                              # the page's own script only
    assert "alert" not in "".join(page.scripts)
    assert '<script>alert("pwned")' not in html_text
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html_text
    assert "ein Fuchs 🦊 im Schnee — 狐" in html_text
    assert XSS_PROMPT in page.text                                    # the text a reader sees is the prompt
    best = next(c for c in report_of(result)["candidates"] if c["id"] == report_of(result)["best"])
    assert page.find("button", cls="copy", data_copy=best["prompt"])  # the copy button holds the exact prompt


def test_the_page_fetches_nothing_from_the_network(full):
    page = page_of(full)
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is not None:
                assert "://" not in value and not value.startswith("//"), (tag, attrs)
    (csp,) = page.find("meta", http_equiv="Content-Security-Policy")
    assert "default-src 'none'" in csp["content"]


def test_the_page_follows_report_json_during_the_run(tmp_path):
    seen = []

    def on_candidate(candidate, image):
        report = json.loads((run_dir() / "report.json").read_text())
        page = Page((run_dir() / PAGE_NAME).read_text(encoding="utf-8"))
        cards = {c["data-id"] for c in page.find("a", cls="card") if "pending" not in c["class"]}
        seen.append((candidate.id, report["status"], cards == {c["id"] for c in report["candidates"]},
                     bool(page.find("meta", http_equiv="refresh"))))

    run_dir = lambda: next((tmp_path / "runs").iterdir())
    BeamSearch(FastOps(), HashGenerator(), StatsScorer(), recorded_runs.config(),
               SearchCallbacks(on_candidate=on_candidate)).run(recorded_runs.PROMPT, tmp_path / "runs", "live")
    assert len(seen) == 12
    assert all(status == "running" and same and refresh for _, status, same, refresh in seen)
    final = Page((run_dir() / PAGE_NAME).read_text(encoding="utf-8"))
    assert not final.find("meta", http_equiv="refresh")               # a finished run's page stays still


def test_a_newer_schema_version_is_announced_and_read_as_far_as_possible():
    assert READS_SCHEMA_VERSION == record_module.SCHEMA_VERSION
    page = Page(build_page({"schema_version": READS_SCHEMA_VERSION + 1, "run_id": "future", "status": "finished",
                            "candidates": [{"id": "i0c0", "iteration": 0, "index": 0, "status": "ok",
                                            "image": "i0c0.png", "scores": {"total": 50.0}, "prompt": "p",
                                            "seed": 1, "new_field": {"x": 1}}],
                            "iterations": [{"iteration": 0, "survivors": ["i0c0"], "best_total": 50.0}],
                            "best": "i0c0", "lineage": ["i0c0"], "something_new": True}))
    (banner,) = page.find("div", id="schema-warning")
    assert f"schema_version {READS_SCHEMA_VERSION + 1}" in page.text
    assert [c["data-id"] for c in page.find("a", cls="card")] == ["i0c0"]
    current = Page(build_page({"schema_version": READS_SCHEMA_VERSION, "candidates": [], "iterations": []}))
    assert not current.find("div", id="schema-warning")


def test_round_views_put_recorded_and_pending_candidates_in_their_rounds(tmp_path):
    report = report_of(recorded_runs.interrupted_run(tmp_path))
    views = round_views(report)
    assert [len(v["candidates"]) for v in views] == [4, 4, 4]
    assert views[2]["entry"] is None and {c["status"] for c in views[2]["candidates"]} == {"pending"}


def test_highlight_marks_the_new_words_only():
    assert highlight_changes("a red fox <b>", "a fox") == "a <mark>red</mark> fox <mark>&lt;b&gt;</mark>"
    assert highlight_changes("same words", "same words") == "same words"
    assert highlight_changes("x & y", None) == "x &amp; y"


def test_ensure_page_rebuilds_a_missing_or_stale_page(full, tmp_path):
    run_dir = tmp_path / "copy"
    run_dir.mkdir()
    (run_dir / "report.json").write_bytes((full.run_dir / "report.json").read_bytes())
    page = ensure_page(run_dir)
    assert page == run_dir / PAGE_NAME and "i0c0" in page.read_text(encoding="utf-8")
    before = page.stat().st_mtime_ns
    assert ensure_page(run_dir).stat().st_mtime_ns == before                  # fresh: left alone
    report = json.loads((run_dir / "report.json").read_text())
    report["user_prompt"] = "edited by hand"
    (run_dir / "report.json").write_text(json.dumps(report))
    os.utime(run_dir / "report.json", ns=(before + 10**9, before + 10**9))
    assert "edited by hand" in ensure_page(run_dir).read_text(encoding="utf-8")
    with pytest.raises(FileNotFoundError):
        ensure_page(tmp_path / "nothing")


def test_a_page_that_cannot_be_written_never_stops_the_run(tmp_path, caplog):
    run_dir = tmp_path / "runs" / "blocked"
    run_dir.mkdir(parents=True)
    (run_dir / PAGE_NAME).mkdir()               # a folder where the page should go: os.replace fails
    (run_dir / "keep").write_text("")           # so the folder is not empty
    rec = record_module.RunRecord(run_dir, {"timings": {}, "candidates": [], "run_id": "blocked"})
    rec.save()
    assert json.loads((run_dir / "report.json").read_text())["run_id"] == "blocked"
    assert "could not write" in caplog.text
