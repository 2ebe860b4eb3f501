"""report.html in a real browser (headless Chromium through Playwright), opened from file:// as a user opens a run
folder: no console errors, every image loads, the lineage path ends on the winner, one plot point per round, the
full-size view and the copy buttons, and the page without JavaScript. A screenshot of the page is saved
(PROMPTBEAM_SCREENSHOT_DIR, default the test's tmp_path).

Skipped unless Playwright is importable and a Chromium binary exists (PROMPTBEAM_CHROMIUM, default
/usr/bin/chromium); no browser is downloaded."""
import os
from pathlib import Path

import pytest

from tests.fixtures import recorded_runs
from tests.fixtures.browser import chromium, require_browser

sync_api = require_browser()


@pytest.fixture(scope="module")
def browser():
    with chromium(sync_api) as browser:
        yield browser


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {"full": recorded_runs.full_run(root, "full"),
            "xss": recorded_runs.full_run(root, "xss", prompt='<script>alert(1)</script><img src=x onerror=alert(2)> '
                                                               "Füchse 🦊"),
            "single": recorded_runs.one_round_run(root)}


class Viewer:
    """One page opened from file://, with its console errors and any dialog it tried to open."""

    def __init__(self, context, run_dir: Path):
        self.page = context.new_page()
        self.problems = []
        self.page.on("console", lambda m: m.type in ("error", "warning") and self.problems.append(m.text))
        self.page.on("pageerror", lambda error: self.problems.append(str(error)))
        self.page.on("dialog", lambda dialog: (self.problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        self.page.on("request", lambda r: not r.url.startswith("file://") and self.problems.append(f"fetch {r.url}"))
        self.page.goto((run_dir / "report.html").as_uri())
        self.page.wait_for_load_state("load")

    def images(self, selector: str) -> list:
        return self.page.eval_on_selector_all(
            selector, "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth])")


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context
    context.close()


def test_the_page_loads_from_file_with_every_image_and_no_error(context, runs, tmp_path):
    result = runs["full"]
    viewer = Viewer(context, result.run_dir)
    report = result.report
    thumbs = viewer.images("img.thumb")
    ok = [c for c in report["candidates"] if c["status"] == "ok"]
    assert len(thumbs) == len(ok) > 0
    assert all(complete and width == 48 for _, complete, width in thumbs), thumbs
    controls = viewer.images(".control-strip img")
    assert len(controls) == len(report["control"]["seeds"]) and all(w == 48 for _, _, w in controls)
    assert viewer.images("img.best-image") == [[f"{report['best']}.png", True, 48]]
    out = Path(os.environ.get("PROMPTBEAM_SCREENSHOT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    shot = out / "report_page.png"
    viewer.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    assert viewer.problems == []


def test_the_lineage_path_ends_on_the_winner_and_the_plot_has_a_point_per_round(context, runs):
    for name in ("full", "single"):
        result = runs[name]
        viewer = Viewer(context, result.run_dir)
        geometry = viewer.page.evaluate("""() => {
            const path = document.getElementById("lineage-path");
            const points = Array.from(path.points).map(p => [p.x, p.y]);
            const nodes = Array.from(document.querySelectorAll(".beam-tree a.node")).map(a => {
                const c = a.querySelector("circle");
                return [a.dataset.id, c.cx.baseVal.value, c.cy.baseVal.value, getComputedStyle(a).display];
            });
            return {points, nodes, bestPoints: document.querySelectorAll(".score-plot .best-point").length,
                    meanPoints: document.querySelectorAll(".score-plot .mean-point").length};
        }""")
        at = {node_id: (x, y) for node_id, x, y, _ in geometry["nodes"]}
        assert [tuple(p) for p in geometry["points"]] == [at[i] for i in result.report["lineage"]]
        assert tuple(geometry["points"][-1]) == at[result.report["best"]]
        rounds = len(result.report["iterations"])
        assert geometry["bestPoints"] == geometry["meanPoints"] == rounds
        assert viewer.problems == []


def test_a_card_opens_the_full_image_and_copies_prompt_and_seed(context, runs):
    result = runs["full"]
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    viewer = Viewer(context, result.run_dir)
    page = viewer.page
    best = next(c for c in result.report["candidates"] if c["id"] == result.report["best"])
    overlay = page.locator(f"#view-{best['id']}")
    assert not overlay.is_visible()
    page.click(f"#card-{best['id']}")
    overlay.wait_for(state="visible")
    page.wait_for_function(f"() => document.querySelector('#view-{best['id']} img.full').naturalWidth > 0")
    assert overlay.locator("pre.prompt").inner_text() == best["prompt"]
    overlay.get_by_role("button", name="copy prompt").click()
    page.wait_for_function("() => document.querySelector('button.copy.done')")
    assert page.evaluate("() => navigator.clipboard.readText()") == best["prompt"]
    overlay.get_by_role("button", name="copy seed").click()
    page.wait_for_function(f"async () => (await navigator.clipboard.readText()) === '{best['seed']}'")
    page.keyboard.press("Escape")
    overlay.wait_for(state="hidden")
    assert viewer.problems == []


def test_without_javascript_everything_shows_and_cards_still_open(browser, runs):
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1400, "height": 1000})
    try:
        result = runs["full"]
        viewer = Viewer(context, result.run_dir)
        page = viewer.page
        assert all(w == 48 for _, _, w in viewer.images("img.thumb"))
        assert page.locator(".score-plot .best-point").count() == len(result.report["iterations"])
        box = page.locator("#lineage-path").bounding_box()     # a straight path may be 0 px high, not 0 wide
        assert box and box["width"] > 100
        first = result.report["candidates"][0]["id"]
        page.click(f"#card-{first}")
        page.locator(f"#view-{first}").wait_for(state="visible")          # a CSS :target overlay
        assert not page.locator(f"#view-{first} button.copy").first.is_visible()   # copying needs the script
        page.click(f"#view-{first} a.close")
        page.locator(f"#view-{first}").wait_for(state="hidden")
        assert viewer.problems == []
    finally:
        context.close()


def test_a_hostile_prompt_is_shown_as_text_and_runs_nothing(context, runs):
    result = runs["xss"]
    viewer = Viewer(context, result.run_dir)
    heading = viewer.page.locator("h1").inner_text()
    assert heading == result.report["user_prompt"]
    assert viewer.page.evaluate("() => document.scripts.length") == 1
    assert viewer.problems == []                          # no alert dialog, no request for "x"


def test_a_judged_run_shows_each_pair_with_both_images_and_what_the_critic_saw(context, fake_ollama, tmp_path):
    """A search with a vision critic and a pairwise judge (the fake Ollama's vision models): every judged pair's two
    images load, the winner is marked, and a critiqued parent's full view lists the critic's weaknesses."""
    from pipeline.beam.search import BeamConfig, BeamSearch
    from pipeline.llm.client import OllamaClient
    from pipeline.llm.operations import PromptEngine
    from pipeline.llm.vision import PairwiseJudge
    from tests.beam.test_beam_collaborators import HashGenerator, StatsScorer

    fake_ollama.add_vision_models()
    vision = PromptEngine(OllamaClient(fake_ollama.url, "qwen2.5vl:7b"))
    result = BeamSearch(PromptEngine(OllamaClient(fake_ollama.url, "qwen2.5:7b-instruct")), HashGenerator(),
                        StatsScorer(), BeamConfig(width=48, height=48, seed=5, beam_width=6, judge_margin=2.0),
                        critic=vision, judge=PairwiseJudge(vision)).run("a lighthouse in a storm", tmp_path)
    report = result.report
    viewer = Viewer(context, result.run_dir)
    pairs = viewer.page.locator(".judgement")
    assert pairs.count() == len(report["judgements"]) > 0
    for index in range(pairs.count()):               # the pairs' images load lazily, as they come into view
        pairs.nth(index).scroll_into_view_if_needed()
    viewer.page.wait_for_function("() => [...document.querySelectorAll('.judgement img')].every(i => i.complete)")
    pictures = viewer.images(".judgement img")
    assert len(pictures) == 2 * len(report["judgements"]) and all(done and w == 48 for _, done, w in pictures)
    decided = [j for j in report["judgements"] if j["verdict"] != "tie"]
    assert viewer.page.locator(".judgement figure.won").count() == len(decided)
    parent = next(c for c in report["candidates"] if c["evaluation"])
    viewer.page.click(f"#card-{parent['id']}")
    overlay = viewer.page.locator(f"#view-{parent['id']}")
    overlay.wait_for(state="visible")
    assert "What the critic saw (qwen2.5vl:7b)" in overlay.inner_text()
    assert overlay.locator(".evaluation ul.weaknesses li").all_inner_texts() == parent["evaluation"]["weaknesses"]
    assert viewer.problems == []
