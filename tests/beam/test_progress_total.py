"""Progress follows the plan as it is revised: dropped near-duplicates and early stops shrink the total, so a
finished search ends at 100 % — in the search's events, in the CLI's tqdm bar and in the node's ProgressBar."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from pipeline.beam import BeamConfig, BeamSearch, SearchCallbacks

from tests.beam.test_beam_collaborators import FastOps, HashGenerator, StatsScorer
from tests.cli.test_cli_search import REPO, cli_env, only_run_dir, read_report

PROMPT = "a lighthouse in a storm"


def run(tmp_path, ops=None, **config):
    events = []
    config = BeamConfig(**({"width": 32, "height": 32, "seed": 3} | config))
    search = BeamSearch(ops or FastOps(), HashGenerator(), StatsScorer(), config,
                        SearchCallbacks(on_progress=events.append))
    return search.run(PROMPT, tmp_path / "runs"), events


def assert_ends_at_100(events, rendered: int):
    totals = [e.images_total for e in events]
    assert events[-1].images_done == events[-1].images_total == rendered
    assert totals == sorted(totals, reverse=True), "the total only shrinks as the plan is revised"


def test_dropped_duplicates_shrink_the_total(tmp_path):
    result, events = run(tmp_path, FastOps(duplicate_children=True), beam_width=4, keep_top=2, iterations=3)
    report = result.report
    # round 1 brings nothing new (all four dropped), so the search stops there: exhausted
    assert [len(entry["duplicates"]) for entry in report["iterations"]] == [0, 4]
    assert result.stop_reason == "exhausted"
    assert_ends_at_100(events, 4)
    assert events[0].images_total == 12                  # planned: 4 + 2 rounds * 4
    # Once round 1 is planned (all four dropped), the total is 4 now + round 2's four, until the round stops it.
    assert {e.images_total for e in events if e.iteration == 1 and e.phase not in ("llm", "select")} == {8}
    assert report["images"]["budget"] == 12              # the record's budget keeps its documented meaning


@pytest.mark.parametrize("stop, duplicates, reason", [({"target_score": 1.0}, False, "target"),
                                                      ({"patience": 1}, False, "patience"),
                                                      ({}, True, "exhausted")])
def test_an_early_stop_ends_at_100(tmp_path, stop, duplicates, reason):
    result, events = run(tmp_path, FastOps(duplicate_children=duplicates), beam_width=4, keep_top=2,
                         iterations=5, **stop)
    assert result.stop_reason == reason and len(result.report["iterations"]) < 5
    assert_ends_at_100(events, len(result.report["candidates"]))


def test_control_arm_total_is_exact_at_the_end(tmp_path):
    result, events = run(tmp_path, FastOps(duplicate_children=True), beam_width=4, keep_top=2, iterations=3,
                         control_arm=True)
    assert result.control["status"] == "done" and result.control["budget"] == 0
    assert_ends_at_100(events, 4)
    result, events = run(tmp_path, beam_width=4, keep_top=2, iterations=2, control_arm=True)
    assert result.control["budget"] == 4
    assert_ends_at_100(events, 4 + 4 + 4)


def test_a_replay_that_stops_where_the_record_stopped_ends_at_100(tmp_path):
    original, _ = run(tmp_path, beam_width=4, keep_top=2, iterations=3, target_score=1.0)
    assert original.stop_reason == "target"
    events = []
    BeamSearch.replay(original.run_dir, HashGenerator(), StatsScorer(), tmp_path / "replays",
                      callbacks=SearchCallbacks(on_progress=events.append), overrides={"target_score": 1e9})
    assert_ends_at_100(events, len(original.report["candidates"]))


# ---- what the user sees -----------------------------------------------------------------------------------------

SCENE = ("under a wide grey sky with low clouds drifting over calm dark water near an old stone harbour wall "
         "covered in moss and barnacles while gulls circle slowly above")
MEDIUM = ("thick impasto brushwork, muted palette, soft diffuse light, visible canvas texture, gentle vignette, "
          "balanced composition, painterly edges, quiet mood, museum quality, fine craquelure")


def script_near_duplicate_expansions(fake_ollama, n: int) -> None:
    """Round 0's (WHAT, HOW) pairs differ by one word in each half: their combined prompts share all but 4 of ~50
    tokens, so all but one are dropped as near-duplicates (token Jaccard >= 0.9) before rendering. Round 0 asks
    for its pairs two per request (PromptEngine.expand_pairs)."""
    whats = [f"A tall {w} lighthouse {SCENE}" for w in ("amber", "cobalt", "scarlet", "violet", "silver")[:n]]
    hows = [f"Oil painting, {MEDIUM}, {w} accents" for w in ("dawn", "dusk", "noon", "winter", "summer")[:n]]
    pairs = [{"what": what, "how": how} for what, how in zip(whats, hows)]
    fake_ollama.script("/api/chat", *({"content": json.dumps({"pairs": pairs[i:i + 2]})} for i in range(0, n, 2)))


def test_cli_bar_ends_at_100_when_duplicates_are_dropped(fake_ollama, models, tmp_path):
    script_near_duplicate_expansions(fake_ollama, 4)
    out = tmp_path / "runs"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "search", "a lighthouse at dusk", "--ollama-url", fake_ollama.url,
         *map(str, models), "--beam-width", "4", "--keep-top", "1", "--iterations", "2", "--llm-concurrency", "1",
         "--combine-mode", "template", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=180, env=cli_env())
    assert result.returncode == 0, result.stderr
    report = read_report(only_run_dir(out))
    assert len(report["iterations"][0]["duplicates"]) == 3, report["iterations"][0]
    rendered = len(report["candidates"])
    assert rendered < 8
    # tqdm redraws with \r; the last drawing of the bar is its final state: "search: 100%|...| 5/5 [...]".
    states = re.findall(r"search:\s+(\d+)%\|[^|]*\|\s*(\d+)/(\d+)", result.stderr)
    assert states, result.stderr
    assert states[-1] == ("100", str(rendered), str(rendered)), states


@pytest.fixture
def models(tiny_flux_dir, tiny_clip_dir, tiny_aesthetic_path) -> list:
    return ["--flux", tiny_flux_dir, "--clip", f"local-dir:{tiny_clip_dir}", "--aesthetic", tiny_aesthetic_path,
            "--width", "64", "--height", "64", "--steps", "2", "--device", "cpu"]


def test_node_progress_bar_ends_at_100_when_duplicates_are_dropped(comfy_base, fake_ollama, tiny_clip_dir,
                                                                  tiny_aesthetic_path):
    from tests.fixtures.comfy import PACK_MODULE, load_pack, run_node

    load_pack()
    import comfy.utils
    from tests.comfy_fakes import fake_models

    nodes = {name: sys.modules[f"{PACK_MODULE}.nodes.{name}"]
             for name in ("search_node", "llm_nodes", "generation_nodes", "scoring_nodes")}
    (llm,) = run_node(nodes["llm_nodes"].PromptBeamOllama, base_url=fake_ollama.url, model="qwen2.5:7b-instruct",
                      temperature=-1.0, seed=0, keep_alive="5m", retries=0).result
    (generator,) = run_node(
        nodes["generation_nodes"].PromptBeamFluxGenerator, model=fake_models.tiny_model(),
        clip=fake_models.tiny_clip(), vae=fake_models.tiny_vae(), width=64, height=48, steps=2, guidance=3.5,
        sampler_name="euler", scheduler="simple").result
    (scorer,) = run_node(nodes["scoring_nodes"].PromptBeamScorerLoader, clip_model=f"local-dir:{tiny_clip_dir}",
                         aesthetic_model=tiny_aesthetic_path, device="cpu").result
    script_near_duplicate_expansions(fake_ollama, 4)
    comfy.utils.PROGRESS_UPDATES.clear()
    _, _, _, report, _ = run_node(
        nodes["search_node"].PromptBeamSearch, unique_id="31", prompt="a lighthouse at dusk", llm=llm,
        generator=generator, scorer=scorer, beam_width=4, keep_top=1, iterations=2, alpha=0.7, seed=5,
        combine_mode="template", llm_concurrency=1).result
    report = json.loads(report)
    assert len(report["iterations"][0]["duplicates"]) == 3
    updates = [(value, total) for value, total, _, node in comfy.utils.PROGRESS_UPDATES if node == "31"]
    rendered = len(report["candidates"])
    assert updates[-1] == (rendered, rendered) and rendered < 8
