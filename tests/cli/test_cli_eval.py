"""`python -m pipeline eval` as a real subprocess on tiny models and the fake Ollama: a shipped set judged by held-out
tiny reward models (verdicts checked against the models themselves), Ctrl-C then --resume, the ComfyUI workers and
the Flux service as renderers, and every parameter error (exit 2, flag named, nothing started)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.cli.main import main
from pipeline.evaluation import stats
from pipeline.evaluation.prompt_sets import load_set, spread_limit
from tests.cli.test_cli_search import REPO, UNLOADED, cli, cli_env

SMALL = ["--beam-width", 2, "--keep-top", 1, "--iterations", 2, "--seed", 3, "--width", 64, "--height", 64,
         "--steps", 2, "--device", "cpu"]
CONTRACT_ENTRY = {"prompt", "category", "beam", "control", "verdicts"}
CONTRACT_SUMMARY = {"n", "beam_wins", "control_wins", "ties", "win_rate", "ci95", "mean_gain", "images", "seconds"}


@pytest.fixture
def scoring(tiny_clip_dir, tiny_aesthetic_path) -> list:
    return ["--clip", f"local-dir:{tiny_clip_dir}", "--aesthetic", tiny_aesthetic_path]


@pytest.fixture
def hps_judge(tiny_hps) -> list:
    weights, arch = tiny_hps
    return ["--judge", f"hpsv2={weights}", "--hps-arch", arch]


def only_eval(out: Path) -> Path:
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder


def read_eval(folder: Path) -> dict:
    return json.loads((folder / "eval.json").read_text(encoding="utf-8"))


def image(folder: Path, relative: str) -> torch.Tensor:
    from PIL import Image

    from pipeline.images import pil_to_tensor

    with Image.open(folder / relative) as picture:
        return pil_to_tensor(picture)


def test_a_shipped_set_judged_by_held_out_scorers(fake_ollama, tiny_flux_dir, scoring, hps_judge, tiny_hps,
                                                  tiny_pickscore_dir, tmp_path):
    out = tmp_path / "evals"
    result = cli("eval", "--set", "smoke", "--limit", 3, *hps_judge, "--judge", f"pickscore={tiny_pickscore_dir}",
                 "--ollama-url", fake_ollama.url, "--flux", tiny_flux_dir, *scoring, *SMALL, "--out", out)
    assert result.returncode == 0, result.stderr
    folder = only_eval(out)
    data = read_eval(folder)
    assert data["schema_version"] == 1 and data["status"] == "finished"
    assert [j["name"] for j in data["judges"]] == ["hpsv2", "pickscore"]
    assert data["settings"]["scorers"] == ["clip"] and data["settings"]["search"]["control_arm"] is True
    expected_items = spread_limit(load_set("smoke"), 3)
    assert [(e["prompt"], e["category"]) for e in data["prompts"]] == [(i.prompt, i.category) for i in expected_items]

    from pipeline.scoring.hps import load_hpsv2
    from pipeline.scoring.pickscore import load_pickscore

    weights, arch = tiny_hps
    hps = load_hpsv2(weights, torch.device("cpu"), torch.float32, arch=arch)
    pick = load_pickscore(tiny_pickscore_dir, torch.device("cpu"), torch.float32)
    for entry in data["prompts"]:
        assert CONTRACT_ENTRY <= set(entry) and {"run_dir", "best", "image", "scores"} <= set(entry["beam"])
        assert {"best", "image", "scores"} <= set(entry["control"])
        pair = [image(folder, entry["beam"]["image"]), image(folder, entry["control"]["image"])]
        for name, model in (("hpsv2", hps), ("pickscore", pick)):
            beam, control = model.score(pair, entry["prompt"]).tolist()
            if entry["same_image"]:
                assert entry["verdicts"][name] == "tie"
                continue
            assert entry["judge_scores"][name] == pytest.approx({"beam": beam, "control": control}, abs=1e-5)
            assert entry["verdicts"][name] == ("beam" if beam > control else "control")
        assert entry["verdict"] == stats.overall_verdict(entry["verdicts"])
    summary = data["summary"]
    assert CONTRACT_SUMMARY <= set(summary)
    assert summary == stats.summarise(data["prompts"], ["hpsv2", "pickscore"])
    assert summary["images"] == 3 * 6 and len(summary["ci95"]) == 2
    assert f"eval folder:   {folder}" in result.stdout and f"page:          {folder / 'eval.html'}" in result.stdout
    assert f"over 3 prompts: beam {summary['beam_wins']}" in result.stdout
    assert "Traceback" not in result.stderr and "loading judge hpsv2=" in result.stderr


def test_ctrl_c_then_resume(fake_ollama, tiny_flux_dir, scoring, hps_judge, tmp_path):
    out = tmp_path / "evals"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("counting\tthree red apples\nspatial\ta cat under a bench\ntext\ta sign that reads \"OPEN\"\n",
                       encoding="utf-8")
    # --low-vram unloads Ollama before each round's rendering: the second prompt's first unload answers slowly,
    # which holds the eval inside that prompt's search while the test presses Ctrl-C.
    fake_ollama.script("/api/generate", {"json": UNLOADED}, {"json": UNLOADED}, {"json": UNLOADED, "delay": 3})
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "eval", "--prompts", str(prompts), *hps_judge, "--ollama-url",
         fake_ollama.url, "--flux", str(tiny_flux_dir), *map(str, scoring), *map(str, SMALL), "--low-vram",
         "--out", str(out)], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            found = list(out.glob("*/runs/p001/report.json"))
            if found:
                break
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    folder = only_eval(out)
    assert process.returncode == 130, stderr
    assert f"python -m pipeline eval --resume {folder}" in stderr and "Traceback" not in stderr
    interrupted = read_eval(folder)
    assert interrupted["status"] == "interrupted" and [e["index"] for e in interrupted["prompts"]] == [0]
    first = (folder / "runs" / "p000" / "report.json").stat().st_mtime_ns

    refused = cli("eval", "--resume", folder, "--judge", "pickscore")
    assert refused.returncode == 2 and "error: --judge: cannot be changed when resuming" in refused.stderr
    resumed = cli("eval", "--resume", folder)
    assert resumed.returncode == 0, resumed.stderr
    data = read_eval(folder)
    assert data["status"] == "finished" and [e["index"] for e in data["prompts"]] == [0, 1, 2]
    assert (folder / "runs" / "p000" / "report.json").stat().st_mtime_ns == first
    assert json.loads((folder / "runs" / "p001" / "report.json").read_text())["status"] == "finished"
    assert data["summary"]["n"] == 3 and data["judges"] == interrupted["judges"]


def test_eval_renders_on_comfyui_workers(workers, fake_ollama, scoring, hps_judge, tmp_path):
    a, b = workers(2)
    out = tmp_path / "evals"
    result = cli("eval", "--set", "smoke", "--limit", 2, *hps_judge, "--ollama-url", fake_ollama.url, *scoring,
                 *SMALL, "--comfy-workers", f"{a.url},{b.url}", "--out", out)
    assert result.returncode == 0, result.stderr
    folder = only_eval(out)
    data = read_eval(folder)
    assert data["summary"]["n"] == 2 and data["settings"]["cli"]["comfy_workers"] == f"{a.url},{b.url}"
    for entry in data["prompts"]:
        report = json.loads((folder / entry["beam"]["run_dir"] / "report.json").read_text())
        assert report["config"]["generator"]["backend"] == "comfy-workers"


def test_eval_renders_with_the_flux_service(flux_service, fake_ollama, scoring, hps_judge, tmp_path):
    out = tmp_path / "evals"
    prompts = tmp_path / "one.txt"
    prompts.write_text("a lighthouse at dusk\n", encoding="utf-8")
    result = cli("eval", "--prompts", prompts, *hps_judge, "--ollama-url", fake_ollama.url, *scoring, *SMALL,
                 "--flux-url", flux_service.url, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "loading Flux" not in result.stderr
    data = read_eval(only_eval(out))
    assert data["prompts"][0]["category"] == "" and data["settings"]["cli"]["flux_url"] == flux_service.url
    report = json.loads((only_eval(out) / data["prompts"][0]["beam"]["run_dir"] / "report.json").read_text())
    assert report["config"]["generator"]["backend"] == "remote-flux"


def test_parameter_errors_exit_2_naming_the_flag(fake_ollama, tiny_flux_dir, scoring, hps_judge, tiny_pickscore_dir,
                                                 tmp_path, capsys):
    models = ["--ollama-url", fake_ollama.url, "--flux", str(tiny_flux_dir), *scoring, *map(str, SMALL)]
    out = tmp_path / "evals"
    missing = tmp_path / "missing.txt"
    cases = [
        (["--set", "smoke", "--judge", "clip"], "error: --judge: clip is what this search optimises (it ranks by "
                                                "clip)"),
        (["--set", "smoke", "--scorer", f"pickscore={tiny_pickscore_dir}", "--judge", "pickscore"],
         "error: --judge: pickscore is what this search optimises"),
        (["--set", "smoke", *hps_judge, "--iterations", "1"], "error: --iterations: must be >= 2 for eval"),
        (["--set", "smoke"], "error: --judge: is missing: name at least one judge"),
        ([*hps_judge], "error: --prompts: is missing: give --prompts FILE"),
        (["--set", "drawbench", *hps_judge], "error: --set: no shipped prompt set 'drawbench'"),
        (["--prompts", str(missing), *hps_judge], f"error: --prompts: {missing} is not a file"),
        (["--set", "smoke", *hps_judge, "--limit", "0"], "error: --limit: must be a whole number >= 1"),
        (["--set", "smoke", *hps_judge, "--score-text", "x"], "error: --score-text: does not apply to eval"),
        (["--set", "smoke", "--judge", "vlm:qwen2.5:7b-instruct"], "error: --judge: 'qwen2.5:7b-instruct' cannot "
                                                                   "see images"),
        (["--set", "smoke", "--judge", "imagereward"], "error: --judge: ImageReward is not offered"),
        (["--set", "smoke", "--judge", f"hpsv2={missing}"], f"error: --judge: HPS weights {missing} not found"),
        (["--set", "smoke", *hps_judge, "--beam-width", "0"], "error: --beam-width: must be >= 1"),
    ]
    for flags, message in cases:
        assert main(["eval", *models, "--out", str(out), *flags]) == 2, flags
        err = capsys.readouterr().err
        assert message in err, (flags, err)
    for flags, message in ((["--set", "smoke", "--resume", str(tmp_path)], "error: --set: cannot be changed when "
                                                                           "resuming"),
                           (["--resume", str(tmp_path)], f"error: --resume: {tmp_path} has no eval.json")):
        assert main(["eval", *flags]) == 2 and message in capsys.readouterr().err
    assert not out.exists() and not any(r["path"] == "/api/chat" for r in fake_ollama.requests)
    both = cli("eval", "--set", "smoke", "--prompts", missing)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_a_vision_model_judges_the_two_winners_in_both_orders(fake_ollama, tiny_flux_dir, scoring, tmp_path):
    """`--judge vlm:MODEL` with a search that itself uses a critic and another vision model as its judge."""
    fake_ollama.add_vision_models()
    out = tmp_path / "evals"
    result = cli("eval", "--set", "smoke", "--limit", 2, "--judge", "vlm:qwen2.5vl:7b", "--critic-model",
                 "gemma3:4b", "--judge-model", "gemma3:4b", "--judge-margin", 3, "--ollama-url", fake_ollama.url,
                 "--flux", tiny_flux_dir, *scoring, *SMALL, "--out", out)
    assert result.returncode == 0, result.stderr
    folder = only_eval(out)
    data = read_eval(folder)
    assert [j["name"] for j in data["judges"]] == ["vlm:qwen2.5vl:7b"] and data["judges"][0]["kind"] == "pairwise"
    eval_judge = [r for r in fake_ollama.vision_requests if r["model"] == "qwen2.5vl:7b"]
    for entry in data["prompts"]:
        pair = [image(folder, entry["beam"]["image"]), image(folder, entry["control"]["image"])]
        blue = [float(p[..., 2].mean()) for p in pair]
        same = torch.equal(pair[0], pair[1])
        expected = "tie" if same or abs(blue[0] - blue[1]) < 0.004 else "beam" if blue[0] > blue[1] else "control"
        assert entry["verdicts"]["vlm:qwen2.5vl:7b"] == expected
    compared = sum(1 for e in data["prompts"] if not torch.equal(image(folder, e["beam"]["image"]),
                                                                 image(folder, e["control"]["image"])))
    assert len(eval_judge) == 2 * compared and all(r["kind"] == "judge" for r in eval_judge)
    searches = [json.loads((folder / e["beam"]["run_dir"] / "report.json").read_text()) for e in data["prompts"]]
    assert all(s["config"]["judge"]["model"] == "gemma3:4b" for s in searches)      # the search's own judge
    # the eval's judge is refused when it is the search's own
    refused = cli("eval", "--set", "smoke", "--judge", "vlm:gemma3:4b", "--judge-model", "gemma3:4b",
                  "--ollama-url", fake_ollama.url, "--flux", tiny_flux_dir, *scoring, *SMALL, "--out", out)
    assert refused.returncode == 2 and "--judge: vlm:gemma3:4b is what this search optimises" in refused.stderr
