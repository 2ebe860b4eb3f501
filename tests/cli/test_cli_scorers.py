"""`--scorer SPEC` end to end on tiny models: a search ranked by PickScore + HPSv2 (real subprocess, fake Ollama),
resumed with the same scorers; one verdict per spec from `search`, `doctor`, the vision service's /score and the
scorer node, all from pipeline/scoring/sources.py."""
from __future__ import annotations

import subprocess
import sys

import pytest
import requests
import torch

from pipeline.cli.main import main
from pipeline.errors import InvalidParameter
from pipeline.scoring import sources, specs
from tests.cli.test_cli_doctor import lines_by_label
from tests.cli.test_cli_search import REPO, cli, cli_env, only_run_dir, read_report
from tests.fixtures.servers import free_port, stop_process, wait_until_ready

SMALL = ["--beam-width", 2, "--keep-top", 1, "--iterations", 2, "--seed", 3, "--width", 64, "--height", 64,
         "--steps", 2, "--device", "cpu"]


@pytest.fixture
def rewards(tiny_pickscore_dir, tiny_hps) -> list:
    weights, arch = tiny_hps
    return ["--scorer", f"pickscore={tiny_pickscore_dir}", "--scorer", f"hpsv2={weights}", "--hps-arch", arch]


@pytest.fixture
def models(tiny_flux_dir, tiny_clip_dir, tiny_aesthetic_path) -> list:
    return ["--flux", tiny_flux_dir, "--clip", f"local-dir:{tiny_clip_dir}", "--aesthetic", tiny_aesthetic_path]


def test_search_ranks_by_the_named_scorers_and_resume_keeps_them(fake_ollama, models, rewards, tmp_path):
    out = tmp_path / "runs"
    result = cli("search", "three red apples", "--ollama-url", fake_ollama.url, *models, *SMALL, *rewards,
                 "--out", out)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    report = read_report(run_dir)
    assert report["config"]["cli"]["scorers"] == rewards[1:4:2] and report["config"]["cli"]["hps_arch"] == rewards[5]
    assert report["config"]["scorer"]["ranked_by"] == ["pickscore", "hpsv2"]
    for candidate in report["candidates"]:
        scores = candidate["scores"]
        assert list(scores) == ["alignment", "aesthetic", "pickscore", "hpsv2", "total"]
        assert scores["total"] == pytest.approx(specs.combined_total(scores, ("pickscore", "hpsv2")))
    best = max(report["candidates"], key=lambda c: c["scores"]["total"])
    assert report["best"] == best["id"]
    assert f"pickscore {best['scores']['pickscore']:.3f}  hpsv2 {best['scores']['hpsv2']:.3f}" in result.stdout

    # --resume reloads the same scorers from the record, and refuses to change them.
    refused = cli("search", "--resume", run_dir, "--scorer", "clip")
    assert refused.returncode == 2 and "error: --scorer: cannot be changed when resuming" in refused.stderr
    resumed = cli("search", "--resume", run_dir, "--iterations", 3)
    assert resumed.returncode == 0, resumed.stderr
    report = read_report(run_dir)
    later = [c for c in report["candidates"] if c["iteration"] == 2]
    assert later and all(set(c["scores"]) >= {"pickscore", "hpsv2"} for c in later)


def test_every_command_gives_the_resolvers_verdict(fake_ollama, models, tiny_hps, tmp_path, capsys):
    missing = tmp_path / "missing"
    weights, arch = tiny_hps
    cases = [(f"pickscore={missing}", None), (f"hpsv2={missing}.pt", arch), ("imagereward", None),
             (f"pickscore={tmp_path}", None)]
    for spec, hps_arch in cases:
        verdict = sources.resolve_scorer(spec, hps_arch=hps_arch)
        assert verdict.status == "fail" and verdict.invalid
        arch_flags = ["--hps-arch", hps_arch] if hps_arch else []
        assert main(["search", "apples", "--ollama-url", fake_ollama.url, *map(str, models), "--device", "cpu",
                     "--out", str(tmp_path / "runs"), "--scorer", spec, *arch_flags]) == 2
        assert f"error: --scorer: {verdict.message()}" in capsys.readouterr().err
        assert main(["doctor", "--ollama-url", fake_ollama.url, *map(str, models), "--scorer", spec,
                     *arch_flags]) == 1
        assert f"[FAIL] scorer    {spec}: {verdict.detail}" in capsys.readouterr().out
        with pytest.raises(InvalidParameter) as refused:
            sources.check_scorers([spec], hps_arch, flag="scorers")
        assert InvalidParameter.bare(refused.value) == verdict.message()
    assert not (tmp_path / "runs").exists() and not any(r["path"] == "/api/chat" for r in fake_ollama.requests)
    flag_errors = [(["--hps-arch", arch], "error: --hps-arch: sets the architecture of the hpsv2 scorer"),
                   (["--scorer", "hpsv2", "--hps-arch", "ViT-Z-1"], "error: --hps-arch: unknown open_clip "
                                                                   "architecture 'ViT-Z-1'"),
                   (["--scorer", "pickscore", "--scorer", "PickScore"], "error: --scorer: pickscore is named twice")]
    for flags, message in flag_errors:
        assert main(["search", "apples", "--ollama-url", fake_ollama.url, *map(str, models), "--device", "cpu",
                     "--out", str(tmp_path / "runs"), *flags]) == 2
        assert message in capsys.readouterr().err


def test_doctor_lists_the_chosen_scorers(fake_ollama, models, rewards, tiny_pickscore_dir, tiny_hps):
    result = cli("doctor", "--ollama-url", fake_ollama.url, *models, "--scorer", "clip", *rewards)
    assert result.returncode == 0, result.stdout + result.stderr
    scorer_lines = [line for line in result.stdout.splitlines() if line[7:17].strip() == "scorer"]
    assert [line[17:].split(":")[0] for line in scorer_lines] == ["clip", f"pickscore={tiny_pickscore_dir}",
                                                                  f"hpsv2={tiny_hps[0]}"]
    assert all(line.startswith("[ok]") for line in scorer_lines), scorer_lines
    assert lines_by_label(result.stdout)["clip"][0] == "ok"


# ---- the vision service and its client ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pickscore_service(tmp_path_factory, tiny_clip_dir, tiny_aesthetic_path, tiny_pickscore_dir):
    workdir = tmp_path_factory.mktemp("vision_scorers")
    port = free_port()
    log = open(workdir / "service.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.services.vision", "--port", str(port), "--device", "cpu", "--clip",
         f"local-dir:{tiny_clip_dir}", "--aesthetic", tiny_aesthetic_path, "--scorer",
         f"pickscore={tiny_pickscore_dir}"], cwd=REPO, env=cli_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url + "/health", timeout=120, name="the vision service",
                         output=(workdir / "service.log").read_text)
        yield url
    finally:
        stop_process(process)
        log.close()


def test_vision_service_scores_with_its_scorers_and_refuses_others(pickscore_service, tiny_scorer,
                                                                   tiny_pickscore_dir):
    from pipeline.scoring.remote import RemoteScorer
    from pipeline.scoring.scorer_set import with_rewards

    images = [torch.full((40, 56, 3), v) for v in (0.2, 0.5, 0.9)]
    local = with_rewards(tiny_scorer, [f"pickscore={tiny_pickscore_dir}"]).score(images, "a lighthouse")
    remote = RemoteScorer(pickscore_service, scorers=[f"pickscore={tiny_pickscore_dir}"]).score(images,
                                                                                                 "a lighthouse")
    for mine, theirs in zip(remote, local):
        assert mine.as_dict() == pytest.approx(theirs.as_dict(), abs=1e-4)
    assert remote[0].as_dict()["total"] == pytest.approx(remote[0].named["pickscore"])
    health = requests.get(pickscore_service + "/health", timeout=10).json()
    assert health["scorer"]["scorers"] == [f"pickscore={tiny_pickscore_dir}"]
    with pytest.raises(InvalidParameter, match="does not score with hpsv2; it scores with .*--scorer hpsv2"):
        RemoteScorer(pickscore_service, scorers=["hpsv2"]).score(images, "a lighthouse")
    bad = requests.post(pickscore_service + "/score", json={"images": [], "prompt": "x"}, timeout=10)
    assert bad.status_code == 422
    from pipeline.services.protocol import encode_image

    refused = requests.post(pickscore_service + "/score", timeout=10, json={
        "images": [encode_image(images[0])], "prompt": "x", "scorers": ["imagereward"]})
    assert refused.status_code == 422 and refused.json()["detail"] == "scorers: " + specs.UNSUPPORTED["imagereward"]


def test_vision_service_refuses_a_bad_scorer_at_startup(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipeline.services.vision", "--scorer", f"pickscore={tmp_path}/x"],
                            cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=120)
    verdict = sources.resolve_scorer(f"pickscore={tmp_path}/x")
    assert result.returncode == 2 and f"error: --scorer: {verdict.message()}" in result.stderr


def test_doctor_asks_the_vision_service_which_scorers_it_runs(pickscore_service, fake_ollama, tiny_pickscore_dir):
    result = cli("doctor", "--ollama-url", fake_ollama.url, "--vision-url", pickscore_service, "--scorer",
                 f"pickscore={tiny_pickscore_dir}", "--scorer", "hpsv2")
    assert result.returncode == 1, result.stdout
    lines = [line for line in result.stdout.splitlines() if line[7:17].strip() == "scorer"]
    assert lines[0] == (f"[ok]   scorer    pickscore={tiny_pickscore_dir}: scored by the vision service at "
                        f"{pickscore_service} (pickscore={tiny_pickscore_dir})")
    assert lines[1].startswith(f"[FAIL] scorer    hpsv2: the vision service at {pickscore_service} does not score "
                               "with hpsv2  → fix: start it with --scorer hpsv2")
