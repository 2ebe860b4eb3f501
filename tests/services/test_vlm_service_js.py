"""The seed's own client against the VLM service: `LocalVLMProvider` from the seed's repository, run by Node.js
(tests/services/vlm_client_driver.js), calls the real service subprocess (the fake Ollama as the vision model).

Runs when Node.js is installed, IMAGE_GEN_PIPE_V2 names a clone of jflournoy/image-gen-pipe-v2 (a work tree or a
bare repository; its HEAD is read) and axios can be required (e.g. `npm install --prefix DIR axios` and
NODE_PATH=DIR/node_modules); skipped otherwise. The seed's code is read at test time, never copied into this
repository. The replayed requests of test_vlm_service_compat.py cover the same ground without any of this.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

# The provider and the modules it requires (service-manager needs only Node's own modules).
SEED_FILES = ("src/providers/local-vlm-provider.js", "src/utils/comparison-graph.js",
              "src/utils/service-connection.js", "src/utils/service-manager.js")
DRIVER = Path(__file__).with_name("vlm_client_driver.js")
PROMPT = "a lighthouse on a cliff at dusk"
COLOURS = {"pale": (120, 120, 160), "red": (200, 30, 30), "blue": (30, 40, 210)}   # blue > pale > red


def node_env() -> dict:
    return dict(os.environ, DEBUG_VLM_DEBIASING="0", VLM_ENSEMBLE_SIZE="3")


@pytest.fixture(scope="module")
def seed_provider(tmp_path_factory) -> Path:
    """The seed's provider and its requires, copied from its repository into a scratch tree."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    repo = os.environ.get("IMAGE_GEN_PIPE_V2")
    if not repo or not Path(repo).exists():
        pytest.skip("IMAGE_GEN_PIPE_V2 does not name a clone of jflournoy/image-gen-pipe-v2")
    probe = subprocess.run([node, "-e", "require('axios')"], env=node_env(), capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("axios cannot be required (npm install --prefix DIR axios; NODE_PATH=DIR/node_modules)")
    tree = tmp_path_factory.mktemp("seed_client")
    for name in SEED_FILES:
        source = Path(repo) / name
        text = source.read_text() if source.is_file() else subprocess.run(
            ["git", "-C", repo, "show", f"HEAD:{name}"], check=True, capture_output=True, text=True).stdout
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(text)
    return tree / SEED_FILES[0]


def run_client(vlm, provider: Path, scenario: str, tmp_path) -> dict:
    candidates = [{"candidateId": f"i1c{index}", "localPath": str(vlm.png(f"2026-03-01/ses-1/i1c{index}.png", rgb))}
                  for index, rgb in enumerate(COLOURS.values())]
    (tmp_path / "in.json").write_text(json.dumps({"prompt": PROMPT, "candidates": candidates,
                                                  "outside": str(tmp_path / "in.json")}))
    done = subprocess.run(["node", str(DRIVER), str(provider), vlm.url, scenario, str(tmp_path / "in.json"),
                           str(tmp_path / "out.json")], env=node_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((tmp_path / "out.json").read_text())


def test_the_seed_client_ranks_by_the_service(seed_provider, vlm, tmp_path):
    out = run_client(vlm, seed_provider, "session", tmp_path)
    assert out["health"]["status"] == "healthy" and out["health"]["model_repo"] == "qwen2.5vl:7b"
    assert out["load"]["status"] == "loaded" and out["unload"]["status"] == "unloaded"
    # compareImages: the client's camelCase reading of our answer
    compare = out["compare"]
    assert compare["choice"] == "B" and compare["confidence"] == 1
    assert compare["ranks"]["B"] == {"alignment": 1, "aesthetics": 1, "combined": 1}
    assert compare["ranks"]["A"]["combined"] == pytest.approx(2) and compare["winnerStrengths"]
    # compareWithDebiasing swaps at random; every draw gives the same vote
    assert [vote["choice"] for vote in out["debiased"]] == ["A"] * 4
    ensemble = out["ensemble"]
    assert (ensemble["winner"], ensemble["votes"], ensemble["confidence"]) == ("A", {"A": 3, "B": 0}, 1)
    assert out["separate"]["winner"] == "B" and out["separate"]["votes"]["alignment"] == {"A": 0, "B": 2}
    # rankImages: all pairs, 3-vote ensembles; (red, blue) inferred through the client's graph
    ranking = out["ranking"]["rankings"]
    assert [r["candidateId"] for r in ranking] == ["i1c2", "i1c0", "i1c1"]          # blue, pale, red
    assert [r["wins"] for r in ranking] == [2, 1, 0] and out["ranking"]["metadata"]["errors"] == []
    assert out["outside"]["status"] == 403 and "--allow-dir" in out["outside"]["detail"]
    # 1 + 4 + 3 comparisons, 2 separate votes of 2 questions, 2 pairs x 3 votes: each asked in both orders
    assert len(vlm.fake.vision_requests) == 2 * (1 + 4 + 3 + 4 + 6)


def test_a_position_biased_model_gives_the_seed_client_ties(seed_provider, vlm, tmp_path):
    vlm.fake.judge_mode = "position"
    out = run_client(vlm, seed_provider, "biased", tmp_path)
    assert [(e["winner"], e["votes"]) for e in out["ensembles"]] == [("TIE", {"A": 0, "B": 0})] * 3
