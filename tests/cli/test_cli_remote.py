"""`python -m pipeline search --flux-url URL --vision-url URL` against the two services (real subprocesses on
loopback, tiny models), compared with the in-process run of the same models and seeds; and how the seed's
environment variables choose between the two."""
import argparse
import json

import pytest

from pipeline.cli import remote as cli_remote
from pipeline.errors import InvalidParameter
from tests.fixtures.servers import free_port
from tests.cli.test_cli_search import cli, only_run_dir, read_report
from tests.services.test_vision_service_compat import vision  # noqa: F401  (the vision service fixture)

SEARCH = ["--beam-width", 3, "--keep-top", 2, "--iterations", 2, "--seed", 7, "--width", 64, "--height", 64,
          "--steps", 2, "--device", "cpu"]


def comparable(report: dict) -> tuple[dict, list]:
    """The report without what varies between two identical runs (run_id, timings), the components' own
    descriptions (config.generator/scorer/cli) and the per-image generator metadata; scores apart."""
    report = json.loads(json.dumps(report))
    for key in ("run_id", "timings"):
        report.pop(key, None)
    for key in ("generator", "scorer", "cli"):
        report["config"].pop(key, None)
    scores = []
    for candidate in report["candidates"]:
        candidate.pop("generation", None)
        scores.append(candidate.pop("scores", None))
    return report, scores


def test_search_with_both_services_gives_the_in_process_report(fake_ollama, flux_service, vision,  # noqa: F811
                                                              tiny_flux_dir, tiny_clip_dir, tiny_aesthetic_path,
                                                              tmp_path):
    local_out, remote_out = tmp_path / "local", tmp_path / "remote"
    local = cli("search", "a lighthouse at dusk", "--ollama-url", fake_ollama.url, "--flux", tiny_flux_dir,
                "--clip", f"local-dir:{tiny_clip_dir}", "--aesthetic", tiny_aesthetic_path, *SEARCH,
                "--out", local_out)
    assert local.returncode == 0, local.stderr
    fake_ollama.reset()
    remote = cli("search", "a lighthouse at dusk", "--ollama-url", fake_ollama.url, "--flux-url", flux_service.url,
                 "--vision-url", vision.url, *SEARCH, "--out", remote_out)
    assert remote.returncode == 0, remote.stderr
    assert f"Flux service {flux_service.url}" in remote.stderr and f"vision service {vision.url}" in remote.stderr
    assert "loading Flux" not in remote.stderr and "loading scorer" not in remote.stderr
    local_report, remote_report = read_report(only_run_dir(local_out)), read_report(only_run_dir(remote_out))
    (local_decisions, local_scores), (remote_decisions, remote_scores) = \
        comparable(local_report), comparable(remote_report)
    assert remote_decisions == local_decisions
    # The service renders one image per call and the in-process generator a round in one batch: equal up to
    # float noise of batched matmuls (see test_diffusers_flux), far below what the report prints.
    for mine, theirs in zip(remote_scores, local_scores):
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert mine[key] == pytest.approx(theirs[key], abs=1e-3), key
    config = remote_report["config"]
    assert config["generator"]["backend"] == "remote-flux" and config["generator"]["url"] == flux_service.url
    assert config["scorer"]["backend"] == "remote-vision" and config["scorer"]["url"] == vision.url
    assert config["cli"]["flux_url"] == flux_service.url and config["cli"]["vision_url"] == vision.url
    assert local_report["config"]["cli"]["flux_url"] == local_report["config"]["cli"]["vision_url"] == "in-process"


def test_a_service_that_is_down_fails_before_anything_loads(fake_ollama, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    result = cli("search", "a fox", "--ollama-url", fake_ollama.url, "--flux-url", down, "--vision-url", down,
                 *SEARCH, "--out", tmp_path)
    assert result.returncode == 1
    assert f"vision service at {down} is not reachable" in result.stderr
    assert "python -m pipeline.services.vision" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("flag", ["--flux-url", "--vision-url"])
def test_a_bad_url_flag_exits_2_naming_it(flag, tmp_path):
    result = cli("search", "a fox", flag, "localhost:8001", "--out", tmp_path)
    assert result.returncode == 2 and "must be an http(s) URL" in result.stderr, result.stderr


def args(**flags):
    return argparse.Namespace(flux_url=flags.get("flux_url"), vision_url=flags.get("vision_url"))


@pytest.mark.parametrize("environ, expected", [
    ({}, (None, None)),                                              # nothing set: both in process
    ({"IMAGE_PROVIDER": "flux", "VISION_PROVIDER": "local"}, (None, None)),   # the providers alone: unchanged
    ({"FLUX_API_URL": "http://gpu:8001/"}, ("http://gpu:8001", None)),
    ({"IMAGE_PROVIDER": "flux", "FLUX_API_URL": "http://gpu:8001",
      "VISION_PROVIDER": "local", "LOCAL_VISION_API_URL": "http://gpu:8002"}, ("http://gpu:8001", "http://gpu:8002")),
    ({"IMAGE_PROVIDER": "dalle", "FLUX_API_URL": "http://gpu:8001",
      "VISION_PROVIDER": "gpt-vision", "LOCAL_VISION_API_URL": "http://gpu:8002"}, (None, None)),
])
def test_environment_defaults(environ, expected):
    urls = cli_remote.service_urls(args(), {}, environ)
    assert (urls["flux_url"], urls["vision_url"]) == expected


def test_flags_win_over_the_environment_and_in_process_forces_local():
    environ = {"FLUX_API_URL": "http://gpu:8001", "LOCAL_VISION_API_URL": "http://gpu:8002"}
    urls = cli_remote.service_urls(args(flux_url="in-process", vision_url="http://other:9"), {}, environ)
    assert urls == {"flux_url": None, "vision_url": "http://other:9"}
    with pytest.raises(InvalidParameter, match="FLUX_API_URL"):
        cli_remote.service_urls(args(), {}, {"FLUX_API_URL": "gpu:8001"})



def test_resume_reuses_the_recorded_service_urls():
    from pipeline.cli.models import recorded_models

    environ = {"LOCAL_VISION_API_URL": "http://env:8002"}
    report = {"config": {"cli": {"flux": "x", "flux_url": "http://gpu:8001", "vision_url": "in-process"}}}
    recorded = recorded_models(report)
    assert cli_remote.service_urls(args(), recorded, environ) == {"flux_url": "http://gpu:8001", "vision_url": None}
    assert cli_remote.service_urls(args(flux_url="in-process"), recorded, {})["flux_url"] is None
    older = recorded_models({"config": {"cli": {"flux": "x"}}})      # a record from before the services flags
    assert cli_remote.service_urls(args(), older, environ) == {"flux_url": None, "vision_url": "http://env:8002"}


def test_doctor_checks_the_services_instead_of_local_model_files(fake_ollama, flux_service, tmp_path):
    from tests.cli.test_cli_doctor import lines_by_label

    down = f"http://127.0.0.1:{free_port()}"
    result = cli("doctor", "--ollama-url", fake_ollama.url, "--flux-url", flux_service.url, "--vision-url", down)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = lines_by_label(result.stdout)
    assert list(lines) == ["ollama", "torch", "packages", "flux", "vision"]
    assert lines["flux"][0] == "ok" and lines["flux"][1].startswith(f"Flux service at {flux_service.url}: ")
    assert "0 waiting" in lines["flux"][1]
    assert lines["vision"] == ("fail", f"vision service at {down} is not reachable (connection refused)  → fix: "
                                       "start it (`python -m pipeline.services.vision --port 8002`) or fix "
                                       "--vision-url / LOCAL_VISION_API_URL")
    assert "1 check(s) failed: vision" in result.stderr
