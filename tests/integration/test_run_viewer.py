"""The run viewer on a real ComfyUI: after a real search (the test_search_node graph: fake Ollama on loopback, tiny
Flux, tiny scorer), GET /promptbeam/runs and /promptbeam/runs/<run_id>/ answer with the run, its page and images;
ids and paths that leave output/promptbeam are 404, sent as raw HTTP so no client tidies them first. In headless
Chromium: the page served by ComfyUI loads every image without errors, and the editor shows the node's
"open run viewer" button and the Prompt Beam runs menu command (skipped without Playwright / Chromium)."""
import http.client
import json
from urllib.parse import urlsplit

import pytest
import requests

from tests.integration.test_search_node import SEARCH, search_graph

RUNS = "/promptbeam/runs"


@pytest.fixture(scope="module")
def searched(comfy_server, fake_ollama_server, tiny_clip_dir, tiny_aesthetic_path):
    """One finished search, queued over HTTP; its report and the promptbeam.run event the client received."""
    fake_ollama_server.reset()
    ws = comfy_server.websocket()
    try:
        graph = search_graph(fake_ollama_server.url, tiny_clip_dir, tiny_aesthetic_path, run_name="viewer")
        entry = comfy_server.run(graph, timeout=300, client_id=ws.client_id)
        assert entry["status"]["status_str"] == "success", entry["status"]
        report = json.loads(entry["outputs"]["show_report"]["text"][0])
        events = ws.events("promptbeam.run")
    finally:
        ws.close()
    return report, events


def raw_get(comfy_server, path: str) -> tuple[int, bytes]:
    """(status, body) of a GET for exactly `path`, byte for byte as written here."""
    address = urlsplit(comfy_server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_node_announces_its_run_to_the_client(searched):
    report, events = searched
    assert events == [{"node": SEARCH, "run_id": report["run_id"], "url": f"{RUNS}/{report['run_id']}/"}]


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_both_routes_answer_after_a_search(comfy_server, searched, prefix):
    report, _ = searched
    run_id = report["run_id"]
    run_dir = comfy_server.base / "output" / "promptbeam" / run_id
    listing = requests.get(comfy_server.url + prefix + RUNS, params={"format": "json"}, timeout=30)
    assert listing.status_code == 200
    runs = listing.json()["runs"]
    newest = max(runs, key=lambda r: r["started"])
    assert runs[0] == newest and run_id in [r["run_id"] for r in runs]
    ours = next(r for r in runs if r["run_id"] == run_id)
    best = next(c for c in report["candidates"] if c["id"] == report["best"])
    assert ours["thumbnail"] == f"{RUNS}/{run_id}/{best['image']}" and ours["status"] == "finished"
    thumbnail = requests.get(comfy_server.url + prefix + ours["thumbnail"], timeout=30)
    assert thumbnail.status_code == 200 and thumbnail.content == (run_dir / best["image"]).read_bytes()

    html_list = requests.get(comfy_server.url + prefix + RUNS, timeout=30)
    assert html_list.status_code == 200 and f'href="runs/{run_id}/"' in html_list.text

    page = requests.get(f"{comfy_server.url}{prefix}{RUNS}/{run_id}/", timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert page.content == (run_dir / "report.html").read_bytes()
    for candidate in report["candidates"]:
        image = requests.get(f"{comfy_server.url}{prefix}{RUNS}/{run_id}/{candidate['image']}", timeout=30)
        assert image.status_code == 200 and image.headers["Content-Type"] == "image/png"
    moved = requests.get(f"{comfy_server.url}{prefix}{RUNS}/{run_id}", allow_redirects=False, timeout=30)
    assert moved.status_code == 302 and moved.headers["Location"] == f"{run_id}/"


def test_dot_dot_and_unknown_run_ids_are_404(comfy_server, searched):
    report, _ = searched
    run_id = report["run_id"]
    secret = b"outside the runs folder"
    (comfy_server.base / "output" / "secret.txt").write_bytes(secret)
    for path in (f"{RUNS}/../secret.txt", f"{RUNS}/%2e%2e/", f"{RUNS}/..%2Fsecret.txt/", f"{RUNS}/%2e%2e",
                 f"{RUNS}/{run_id}/..%2F..%2Fsecret.txt", f"{RUNS}/{run_id}/../../secret.txt",
                 f"{RUNS}/{run_id}/%2e%2e%2f%2e%2e%2fsecret.txt", f"{RUNS}/no-such-run/", f"{RUNS}/no-such-run",
                 f"{RUNS}/no-such-run/report.json", f"{RUNS}/{run_id}/comfyui.log", f"{RUNS}/{run_id}/.."):
        for prefix in ("", "/api"):
            status, body = raw_get(comfy_server, prefix + path)
            assert status == 404 and secret not in body, (prefix + path, status)
    # A path whose dots climb above /promptbeam/runs never reaches these routes: ComfyUI answers it itself.
    status, body = raw_get(comfy_server, f"{RUNS}/../../secret.txt")
    assert status in (403, 404) and secret not in body
    assert raw_get(comfy_server, f"{RUNS}/{run_id}/")[0] == 200      # the same client, a good path


# -- in the browser ----------------------------------------------------------------------------------------------------

def test_the_served_page_loads_every_image_without_errors(browser, comfy_server, searched):
    report, _ = searched
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        problems = []
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status} {r.url}"))
        page.goto(f"{comfy_server.url}/api{RUNS}/{report['run_id']}/")
        page.wait_for_load_state("load")
        widths = page.eval_on_selector_all("img.thumb", "els => els.map(e => e.naturalWidth)")
        assert len(widths) == len(report["candidates"]) and all(w == 64 for w in widths)
        assert page.eval_on_selector("#lineage-path", "e => e.dataset.ends") == report["best"]
        page.goto(f"{comfy_server.url}/api{RUNS}")
        page.click(f'a[data-run="{report["run_id"]}"]')
        page.wait_for_url(f"**{RUNS}/{report['run_id']}/")
        assert problems == []
    finally:
        context.close()


def test_the_editor_shows_the_run_viewer_button_and_menu_command(browser, editor_module, comfy_server, fake_ollama,
                                                                   tiny_clip_dir, tiny_aesthetic_path):
    """A search node on the editor's canvas; the same graph queued for this editor's client id (with the canvas
    node's id), as the Queue button does: the node grows an "open run viewer" button that opens the run's page."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        editor = editor_module.Editor(context, comfy_server.url)
        page = editor.page
        node_id, client_id = page.evaluate("""() => {
            const node = LiteGraph.createNode("PromptBeamSearch"); app.graph.add(node);
            window.__opened = []; window.open = (url) => { window.__opened.push(url); return null; };
            const comfyApi = window.comfyAPI?.api?.api ?? app.api;   // the module the extensions import
            return [String(node.id), comfyApi?.clientId ?? sessionStorage.getItem("clientId")];
        }""")
        assert client_id, "the editor has no websocket client id"
        graph = search_graph(fake_ollama.url, tiny_clip_dir, tiny_aesthetic_path, run_name="editor", seed=11)
        graph = json.loads(json.dumps(graph).replace(f'"{SEARCH}"', json.dumps(node_id)))
        entry = comfy_server.run(graph, timeout=300, client_id=client_id)
        report = json.loads(entry["outputs"]["show_report"]["text"][0])
        page.wait_for_function(f"""() => app.graph.getNodeById({node_id}).widgets
            .some(w => w.promptbeamViewer)""", timeout=30_000)
        button = page.evaluate(f"""() => {{
            const node = app.graph.getNodeById({node_id});
            const w = node.widgets.find(w => w.promptbeamViewer);
            w.callback(w, app.canvas, node);
            return {{label: w.label, serialize: w.serialize, values: node.serialize().widgets_values.length,
                     inputs: node.widgets.filter(w => !w.promptbeamViewer).length}};
        }}""")
        assert button["label"] == f"open run viewer: {report['run_id']}"
        assert button["serialize"] is False and button["values"] == button["inputs"]   # not saved
        page.evaluate("() => app.extensionManager.command.execute('promptbeam.openRuns')")
        opened = page.evaluate("() => window.__opened")
        assert [urlsplit(u).path for u in opened] == [f"/api{RUNS}/{report['run_id']}/", f"/api{RUNS}"]
        assert requests.get(comfy_server.url + urlsplit(opened[0]).path, timeout=30).status_code == 200
        assert editor.errors == []
    finally:
        context.close()
