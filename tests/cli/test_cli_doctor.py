"""`python -m pipeline doctor`: one line per check, a fix on every failing line, exit 0 only when none fails."""
from __future__ import annotations

import json

import torch

from tests.fixtures.ollama import free_port
from tests.cli.test_cli_search import cli, cli_env


def lines_by_label(stdout: str) -> dict:
    """"[ok]   ollama    http://...: reachable, ..." -> {"ollama": ("ok", "http://...: reachable, ...")}."""
    found = {}
    for line in stdout.splitlines():
        mark, rest = line[:6], line[7:]
        label, text = rest[:10].strip(), rest[10:]
        found[label] = ({"[ok]  ": "ok", "[warn]": "warn", "[FAIL]": "fail"}[mark], text)
    return found


def test_healthy_setup_passes(fake_ollama, tiny_flux_dir, tiny_clip_dir, tiny_aesthetic_path, tiny_lora_path):
    result = cli("doctor", "--ollama-url", fake_ollama.url, "--flux", tiny_flux_dir, "--clip",
                 f"local-dir:{tiny_clip_dir}", "--aesthetic", tiny_aesthetic_path, "--lora", f"{tiny_lora_path}:0.8")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = lines_by_label(result.stdout)
    assert list(lines) == ["ollama", "torch", "packages", "fp8", "flux", "loras", "clip", "aesthetic"]
    assert result.stdout.splitlines()[0] == (f"[ok]   ollama    {fake_ollama.url}: reachable, model "
                                             "qwen2.5:7b-instruct pulled")
    assert lines["flux"] == ("ok", f"local diffusers folder {tiny_flux_dir}")
    assert lines["loras"] == ("ok", f"{tiny_lora_path} x0.8")
    assert lines["clip"] == ("ok", f"local folder {tiny_clip_dir}")
    assert lines["aesthetic"] == ("ok", tiny_aesthetic_path)
    assert lines["packages"][0] == "ok" and "diffusers" in lines["packages"][1]
    status, text = lines["torch"]
    assert text.startswith(torch.__version__)
    if torch.cuda.is_available():
        assert status == "ok" and torch.cuda.get_device_name(0) in text and "GiB" in text
    else:
        assert status == "warn" and "CPU only" in text and "→ note:" in text     # works, slowly: not a failure
        assert lines["fp8"] == ("ok", "not used here: --fp8 needs an NVIDIA GPU with fp8 (Ada, Hopper or newer)")


def test_broken_setup_fails_with_a_fix_per_line(tmp_path):
    port = free_port()
    result = cli("doctor", "--ollama-url", f"http://127.0.0.1:{port}", "--flux", tmp_path / "no_flux",
                 "--clip", f"local-dir:{tmp_path / 'no_clip'}", "--aesthetic", tmp_path / "no_head.pth",
                 "--lora", tmp_path / "no_lora.safetensors")
    assert result.returncode == 1
    lines = lines_by_label(result.stdout)
    assert lines["ollama"] == ("fail", f"http://127.0.0.1:{port}: not reachable (connection refused)  → fix: "
                                       "start it with `ollama serve` (or open the Ollama app), or point --ollama-url / "
                                       "OLLAMA_BASE_URL at where it runs")
    for label in ("flux", "loras", "clip", "aesthetic"):
        assert lines[label][0] == "fail", label
    assert f"{tmp_path / 'no_flux'} not found" in lines["flux"][1] and "→ fix: check the path" in lines["flux"][1]
    assert "no_lora.safetensors' not found" in lines["loras"][1]
    assert "open_clip_config.json not found" in lines["clip"][1]
    assert f"aesthetic checkpoint not found: {tmp_path / 'no_head.pth'}" in lines["aesthetic"][1]
    assert result.stderr.strip() == "5 check(s) failed: ollama, flux, loras, clip, aesthetic"


def test_model_not_pulled_says_which_to_pull(fake_ollama, tiny_flux_dir, tiny_clip_dir, tiny_aesthetic_path):
    result = cli("doctor", "--ollama-url", fake_ollama.url, "--llm-model", "mistral-nemo", "--flux", tiny_flux_dir,
                 "--clip", f"local-dir:{tiny_clip_dir}", "--aesthetic", tiny_aesthetic_path)
    assert result.returncode == 1
    status, text = lines_by_label(result.stdout)["ollama"]
    assert status == "fail"
    assert text == (f"{fake_ollama.url}: reachable, but model mistral-nemo is not pulled (installed: "
                    "qwen2.5:7b-instruct, llama3.1:8b)  → fix: `ollama pull mistral-nemo`, or pick an installed "
                    "model with --llm-model / OLLAMA_MODEL")


def test_hub_models_report_whether_they_are_cached(fake_ollama, tiny_clip_dir, tiny_aesthetic_path, tmp_path):
    """An empty Hugging Face cache: the first run will download (warn, exit 0) unless offline (fail, exit 1).
    A snapshot in the cache layout huggingface_hub reads (refs/main -> snapshots/<rev>/...) counts as cached."""
    hub = tmp_path / "hub"
    common = ["doctor", "--ollama-url", fake_ollama.url, "--flux", "black-forest-labs/FLUX.1-schnell",
              "--clip", f"local-dir:{tiny_clip_dir}", "--aesthetic", tiny_aesthetic_path]
    online = cli(*common, env=cli_env(HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="0"))
    assert online.returncode == 0, online.stdout
    assert lines_by_label(online.stdout)["flux"] == (
        "warn", "hub id black-forest-labs/FLUX.1-schnell: not in the Hugging Face cache yet  → note: the first run "
                "downloads it (about 34 GB)")
    offline = cli(*common, env=cli_env(HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1"))
    assert offline.returncode == 1
    status, text = lines_by_label(offline.stdout)["flux"]
    assert status == "fail" and "HF_HUB_OFFLINE" in text

    snapshot = hub / "models--black-forest-labs--FLUX.1-schnell" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    (hub / "models--black-forest-labs--FLUX.1-schnell" / "refs").mkdir()
    (hub / "models--black-forest-labs--FLUX.1-schnell" / "refs" / "main").write_text("0123abcd")
    cached = cli(*common, env=cli_env(HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1"))
    assert cached.returncode == 0, cached.stdout
    assert lines_by_label(cached.stdout)["flux"] == (
        "ok", "hub id black-forest-labs/FLUX.1-schnell (in the Hugging Face cache)")


def test_malformed_environment_is_a_failing_line_not_a_crash(fake_ollama, tiny_flux_dir, tiny_clip_dir,
                                                             tiny_aesthetic_path):
    result = cli("doctor", "--ollama-url", fake_ollama.url, "--flux", tiny_flux_dir, "--clip",
                 f"local-dir:{tiny_clip_dir}", "--aesthetic", tiny_aesthetic_path,
                 env=cli_env(FLUX_LORAS="[{not json"))
    assert result.returncode == 1
    status, text = lines_by_label(result.stdout)["env"]
    assert status == "fail" and text.startswith("FLUX_LORAS: is not valid JSON") and "fix or unset FLUX_LORAS" in text
    assert lines_by_label(result.stdout)["ollama"][0] == "ok"            # the other checks still ran
