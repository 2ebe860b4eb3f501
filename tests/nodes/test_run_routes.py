"""The run viewer routes (nodes/run_routes.py), registered on the fake PromptServer and called on real run
directories in the fake ComfyUI output folder. The same routes on a real ComfyUI after a real search:
tests/integration/test_run_viewer.py."""
import asyncio
import json
import sys

import pytest

from tests.fixtures import recorded_runs
from tests.fixtures.comfy import load_pack

aiohttp_web = pytest.importorskip("aiohttp.web", reason="aiohttp (ComfyUI's web server) builds the responses")
RUNS = "/promptbeam/runs"


class Request:
    """What the handlers read of an aiohttp request."""

    def __init__(self, query=None, **match_info):
        self.query = query or {}
        self.match_info = match_info


def call(path, query=None, **match_info):
    from server import PromptServer

    handler = PromptServer.instance.routes.handler("GET", path)
    try:
        return asyncio.run(handler(Request(query, **match_info)))
    except aiohttp_web.HTTPException as exc:     # aiohttp answers a raised HTTPFound as the response
        return exc


@pytest.fixture
def runs_root(comfy_base):
    return comfy_base / "output" / "promptbeam"


@pytest.fixture
def two_runs(runs_root):
    older = recorded_runs.one_round_run(runs_root, "older-20260101-000000-ab")
    newer = recorded_runs.full_run(runs_root, "newer-20260101-000001-cd")
    report = json.loads((older.run_dir / "report.json").read_text())
    report["timings"]["started_at"] = "2000-01-01T00:00:00+00:00"          # started first
    (older.run_dir / "report.json").write_text(json.dumps(report))
    return older.run_dir, newer.run_dir


def test_the_pack_registers_the_routes_once():
    load_pack()
    from server import PromptServer

    paths = [r.path for r in PromptServer.instance.routes if r.path.startswith(RUNS)]
    assert sorted(paths) == sorted([RUNS, RUNS + "/{run_id}", RUNS + "/{run_id}/", RUNS + "/{run_id}/{name}"])
    module = sys.modules[PromptServer.instance.routes.handler("GET", RUNS).__module__]
    assert module.__name__.endswith(".nodes.run_routes") and module.register(PromptServer.instance) is False


def test_the_list_is_newest_first_with_the_best_thumbnail(two_runs):
    older, newer = two_runs
    response = call(RUNS, {"format": "json"})
    assert response.status == 200 and response.content_type == "application/json"
    runs = json.loads(response.body)["runs"]
    assert [r["run_id"] for r in runs] == [newer.name, older.name]
    report = json.loads((newer / "report.json").read_text())
    best = next(c for c in report["candidates"] if c["id"] == report["best"])
    assert runs[0]["url"] == f"{RUNS}/{newer.name}/"
    assert runs[0]["thumbnail"] == f"{RUNS}/{newer.name}/{best['image']}"
    assert runs[0]["best_total"] == best["scores"]["total"] and runs[0]["status"] == "finished"
    assert runs[0]["user_prompt"] == recorded_runs.PROMPT and runs[0]["rounds"] == 3

    page = call(RUNS)
    assert page.status == 200 and page.content_type == "text/html"
    assert page.text.index(f'href="runs/{newer.name}/"') < page.text.index(f'href="runs/{older.name}/"')
    assert f'src="runs/{newer.name}/{best["image"]}"' in page.text


def test_no_runs_yet_is_an_empty_list(runs_root):
    assert not runs_root.exists()
    assert json.loads(call(RUNS, {"format": "json"}).body)["runs"] == []
    assert "No runs yet" in call(RUNS).text


def test_a_run_page_and_its_files(two_runs):
    _, newer = two_runs
    page = call(RUNS + "/{run_id}/", run_id=newer.name)
    assert page.status == 200 and page.content_type == "text/html" and page.charset == "utf-8"
    assert page.body == (newer / "report.html").read_bytes()
    image = call(RUNS + "/{run_id}/{name}", run_id=newer.name, name="i0c0.png")
    assert image.status == 200 and image.content_type == "image/png"
    assert image.body == (newer / "i0c0.png").read_bytes()
    control = call(RUNS + "/{run_id}/{name}", run_id=newer.name, name="control_0.png")
    assert control.body == (newer / "control_0.png").read_bytes()
    report = call(RUNS + "/{run_id}/{name}", run_id=newer.name, name="report.json")
    assert report.content_type == "application/json" and json.loads(report.body)["run_id"] == newer.name
    redirect = call(RUNS + "/{run_id}", run_id=newer.name)
    assert redirect.status == 302 and redirect.location == f"{newer.name}/"


def test_a_run_without_a_page_gets_one(two_runs):
    older, _ = two_runs
    (older / "report.html").unlink()
    page = call(RUNS + "/{run_id}/", run_id=older.name)
    assert page.status == 200 and (older / "report.html").is_file() and b"i0c0" in page.body


@pytest.mark.parametrize("run_id", ["..", ".", "../promptbeam", "a/../..", "nope", "", "%2e%2e", "..%2f",
                                    "-leading-dash", "x" * 129])
def test_unknown_or_malformed_run_ids_are_404(two_runs, run_id):
    for path, extra in ((RUNS + "/{run_id}/", {}), (RUNS + "/{run_id}/{name}", {"name": "report.json"}),
                        (RUNS + "/{run_id}", {})):
        response = call(path, run_id=run_id, **extra)
        assert response.status == 404, (path, run_id)


@pytest.mark.parametrize("name", ["../report.json", "..", ".", "report.json.tmp", "secret.txt", "i0c0.png/..",
                                  "i0c99.png", "../../output.png", "README"])
def test_files_outside_the_list_a_run_writes_are_404(two_runs, name):
    _, newer = two_runs
    (newer / "secret.txt").write_text("not for the web")
    assert call(RUNS + "/{run_id}/{name}", run_id=newer.name, name=name).status == 404


def test_symlinks_out_of_the_runs_folder_are_not_followed(two_runs, runs_root, tmp_path):
    _, newer = two_runs
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "report.json").write_text((newer / "report.json").read_text())
    (outside / "i0c0.png").write_bytes(b"private")
    (runs_root / "linked-run").symlink_to(outside, target_is_directory=True)
    assert call(RUNS + "/{run_id}/", run_id="linked-run").status == 404
    assert call(RUNS + "/{run_id}/{name}", run_id="linked-run", name="i0c0.png").status == 404
    (newer / "i9c9.png").symlink_to(outside / "i0c0.png")
    assert call(RUNS + "/{run_id}/{name}", run_id=newer.name, name="i9c9.png").status == 404
    assert "linked-run" not in [r["run_id"] for r in json.loads(call(RUNS, {"format": "json"}).body)["runs"]]
