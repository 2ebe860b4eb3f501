"""eval.html in a real browser (headless Chromium through Playwright), opened from file:// as a user opens an eval
folder, after a real evaluation on the tiny models: every image loads, nothing is fetched from the network, no
console error, the summary and the plot come first, one plot row per judge and category, the two winners side by
side with every judge's verdict, and a hostile prompt shown as text. A screenshot is saved
(PROMPTBEAM_SCREENSHOT_DIR, default the test's tmp_path).

Skipped unless Playwright is importable and a Chromium binary exists (PROMPTBEAM_CHROMIUM, default
/usr/bin/chromium); no browser is downloaded."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.evaluation.prompt_sets import PromptItem
from pipeline.evaluation.runner import Evaluation
from tests.evaluation.conftest import ScriptedJudge, new_record
from tests.fixtures.browser import chromium, require_browser

sync_api = require_browser()

HOSTILE = '<script>alert(1)</script><img src=x onerror=alert(2)> Füchse 🦊'
ITEMS = [PromptItem("three red apples on a plate", "counting"), PromptItem(HOSTILE, "text"),
         PromptItem("a cat under a bench", "spatial")]


@pytest.fixture
def evaluated(tmp_path, make_search):
    judges = [ScriptedJudge("always", {}), ScriptedJudge("split", {HOSTILE: "control"}, default="tie")]
    record = new_record(tmp_path, judges, items=ITEMS)
    return Evaluation(record, make_search(), judges).run()


def test_the_page_opens_offline_with_every_image(evaluated, tmp_path):
    with chromium(sync_api) as browser:
        page = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
        problems = []
        page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        page.on("request", lambda r: not r.url.startswith("file://") and problems.append(f"fetch {r.url}"))
        page.goto((evaluated.eval_dir / "eval.html").as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth])")
        expected = [side["image"] for e in evaluated.data["prompts"] for side in (e["beam"], e["control"])]
        assert [src for src, _, _ in images] == expected
        assert all(complete and width == 64 for _, complete, width in images), images
        order = page.evaluate("""() => ['.headline', 'svg.win-plot', 'section.prompt'].map(
            s => document.querySelector(s).getBoundingClientRect().top)""")
        assert order == sorted(order)                        # the answer, then the plot, then the prompts
        assert page.locator(".headline").inner_text() == "beam wins 83 %"     # beam, tie, beam
        # One plot row each: all judges, the two judges, the three categories.
        assert page.locator("svg.win-plot circle.rate").count() == 6
        sections = page.locator("section.prompt")
        assert sections.count() == 3
        hostile = sections.nth(1)
        assert hostile.locator("p").inner_text() == HOSTILE
        assert hostile.locator("figure").count() == 2 and hostile.locator("td span.chip").all_inner_texts() == [
            "beam", "control"]
        assert page.evaluate("() => document.scripts.length") == 0
        out = Path(os.environ.get("PROMPTBEAM_SCREENSHOT_DIR") or tmp_path)
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / "eval_page.png"), full_page=True)
        assert problems == []
