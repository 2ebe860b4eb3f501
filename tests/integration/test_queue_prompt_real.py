"""`queue --prompt` on a real ComfyUI: the refine loop (prompt in the String node titled "Your prompt") and the
score-and-select twin (prompt on the Score node) take the prompt from the command line, and it reaches the nodes
that read it: the refine loop's LLM steps write their prompts from it, the scorer scores against it."""
import json
import subprocess
import sys
from pathlib import Path

from tests.integration.test_workflows_real import by_title, example_images, here, ids  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[2]
TEXT = "a heron standing in a misty lake at dawn"


def queue_with_prompt(comfy_server, graph, tmp_path):
    workflow = tmp_path / "workflow_api.json"
    workflow.write_text(json.dumps(graph), encoding="utf-8")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "pipeline", "queue", str(workflow), "--server", comfy_server.url,
                             "--prompt", TEXT, "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    return result, out


def saved_text(out: Path, node_id: str) -> str:
    (path,) = [p for p in out.iterdir() if p.name.startswith(f"node{node_id}_")]
    return path.read_text(encoding="utf-8")


def test_refine_loop_takes_the_prompt(comfy_server, here, tmp_path):
    graph = here("refine_loop_manual")
    graph[ids(graph, "PromptBeamOllama")[0]]["inputs"]["seed"] = 7411     # nothing from ComfyUI's cache
    result, out = queue_with_prompt(comfy_server, graph, tmp_path)
    prompt_node = by_title(graph, "Your prompt")
    assert f"prompt set on node(s) {prompt_node}" in result.stderr
    # The fake Ollama writes every answer around the request it quotes: the rounds' prompts carry the new text.
    for title in ("Round 1 · prompt", "Round 2 · prompt", "Round 3 · prompt"):
        assert "heron" in saved_text(out, by_title(graph, title)).lower(), title
    assert "reading nook" not in saved_text(out, by_title(graph, "Round 1 · prompt")).lower()


def test_score_and_select_takes_the_prompt(comfy_server, here, example_images, tmp_path):
    graph = here("score_and_select")
    result, out = queue_with_prompt(comfy_server, graph, tmp_path)
    score, = ids(graph, "PromptBeamScore")
    assert f"prompt set on node(s) {score}" in result.stderr
    scores = json.loads(saved_text(out, by_title(graph, "Scores (JSON)")))
    assert scores["prompt"] == TEXT, scores
