"""Rendering a search round on one ComfyUI server vs two (one per GPU), through the worker pool.

    COMFYUI_DIR=/path/to/ComfyUI python bench/bench_workers.py     # needs 2 GPUs for the second case
    TINY=1 COMFYUI_DIR=... python bench/bench_workers.py           # two CPU servers, a miniature model

Each server runs ComfyUI itself (`main.py`, one GPU each through CUDA_VISIBLE_DEVICES) with the bench-only node
pack bench/bench_pack (a Flux-schnell-size random-weight MODEL, context 768 so a CLIP-L encodes the prompt) and
a random CLIP-L written by tests/integration/build_tiny_models.py, and Flux's full-size VAE with random weights
(TAESD with TINY=1). The render workflow is the shipped
workflows/api/render_flux_worker.json with those models in place of UNETLoader's and DualCLIPLoader's.
A round is N=4 requests of 1024², 4 steps, euler, each with its own prompt and seed, sent as one generate() call
(the pool spreads them over its workers); the median of ROUNDS rounds after one warm-up round is reported. One
worker is measured three times: as the pool runs by default (followed over its websocket, two prompts deep: the
next one waits on the worker while one renders), one prompt at a time, and one at a time polling /history (the pool
before the websocket).
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_common import Results  # noqa: E402
from pipeline.generation.comfy_workers import ComfyWorkerPool  # noqa: E402
from pipeline.generation.protocol import GenerationRequest  # noqa: E402
from tests.fixtures.servers import free_port, stop_process, wait_until_ready  # noqa: E402

COMFYUI_DIR = os.environ.get("COMFYUI_DIR", "")
TINY = bool(os.environ.get("TINY"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
N = int(os.environ.get("N", "4"))
SIZE = int(os.environ.get("SIZE", "64" if TINY else "1024"))
STEPS = int(os.environ.get("STEPS", "2" if TINY else "4"))


FLUX_VAE = "bench_flux_vae.safetensors"


def render_workflow() -> dict:
    workflow = json.loads((REPO / "workflows" / "api" / "render_flux_worker.json").read_text())
    workflow["1"] = {"class_type": "PromptBeamBenchFlux", "inputs": {"seed": 0}}
    workflow["2"] = {"class_type": "CLIPLoader",
                     "inputs": {"clip_name": "tiny_clip_l.safetensors", "type": "stable_diffusion"}}
    workflow["3"] = {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_taef1.safetensors" if TINY else FLUX_VAE}}
    return workflow


def write_flux_vae(path: Path) -> None:
    """Flux's full-size 16-channel AutoencoderKL with random weights, as a file VAELoader reads: the same decoder
    that bench_comfy.py times in-process, so a worker's image costs the same arithmetic."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=[128, 256, 512, 512],
                        layers_per_block=2, down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, use_quant_conv=False, use_post_quant_conv=False)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(path))


def launch(base: Path, models: Path, gpu: int) -> tuple[str, subprocess.Popen]:
    for folder in ("custom_nodes", "models", "user", "input", "output", "temp", "frontend"):
        (base / folder).mkdir(parents=True)
    (base / "frontend" / "index.html").write_text("<html></html>")   # no editor needed: the API is enough
    (base / "custom_nodes" / "promptbeam_bench_pack").symlink_to(REPO / "bench" / "bench_pack",
                                                                target_is_directory=True)
    for folder in models.iterdir():
        (base / "models" / folder.name).symlink_to(folder, target_is_directory=True)
    port = free_port()
    log = open(base / "comfyui.log", "wb")
    command = [sys.executable, os.path.join(COMFYUI_DIR, "main.py"), "--listen", "127.0.0.1", "--port", str(port),
               "--disable-auto-launch", "--base-directory", str(base), "--front-end-root", str(base / "frontend"),
               "--database-url", f"sqlite:///{base}/user/comfyui.db"] + (["--cpu"] if TINY else [])
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu), "PYTHONUNBUFFERED": "1"}
    if TINY:
        env["PROMPTBEAM_BENCH_TINY"] = "1"
    process = subprocess.Popen(command, cwd=COMFYUI_DIR, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(process, url + "/system_stats", 300, f"ComfyUI on GPU {gpu}",
                     lambda: (base / "comfyui.log").read_text(errors="replace")[-3000:])
    return url, process


def round_requests(round_index: int) -> list[GenerationRequest]:
    return [GenerationRequest(f"a lighthouse at dusk, variant {round_index}.{i}", seed=1000 * round_index + i,
                              width=SIZE, height=SIZE, steps=STEPS, guidance=3.5) for i in range(N)]


def time_rounds(pool: ComfyWorkerPool) -> dict:
    pool.generate(round_requests(0))                 # warm-up: each worker builds and loads its model
    walls = []
    workers = []
    for r in range(1, ROUNDS + 1):
        start = time.perf_counter()
        results = pool.generate(round_requests(r))
        walls.append(time.perf_counter() - start)
        workers.append(sorted({res.metadata["render"]["worker"] for res in results}))
    wall = statistics.median(walls)
    return {"round_wall_s": round(wall, 3), "per_image_s": round(wall / N, 3),
            "rounds_s": [round(w, 3) for w in walls], "workers_used": workers[-1]}


def main() -> None:
    import torch

    if not COMFYUI_DIR:
        sys.exit("set COMFYUI_DIR to a ComfyUI checkout")
    if not TINY and not torch.cuda.is_available():
        sys.exit("no GPU: run with TINY=1 to check the script on the CPU")
    gpus = torch.cuda.device_count()
    results = Results("bench_workers", gpus=gpus, device=torch.cuda.get_device_name(0) if gpus else "cpu",
                      n=N, size=SIZE, steps=STEPS, rounds=ROUNDS)
    work = Path(tempfile.mkdtemp(prefix="promptbeam_workers_"))
    models = work / "models"
    subprocess.run([sys.executable, str(REPO / "tests" / "integration" / "build_tiny_models.py"), COMFYUI_DIR,
                    str(models)], check=True, cwd=COMFYUI_DIR)
    if not TINY:
        write_flux_vae(models / "vae" / FLUX_VAE)
    workflow_path = work / "render_bench_api.json"
    workflow_path.write_text(json.dumps(render_workflow()))
    servers = []
    try:
        for gpu in range(2 if TINY else min(gpus, 2)):
            started = time.perf_counter()
            servers.append(launch(work / f"server{gpu}", models, gpu))
            results.log(f"server{gpu}_startup_s", round(time.perf_counter() - started, 1))
        urls = [url for url, _ in servers]
        results.log("one_worker", time_rounds(ComfyWorkerPool(urls[:1], str(workflow_path))))
        # The same worker one prompt at a time (the next is queued only once the last image is back)...
        results.log("one_worker_depth1", time_rounds(ComfyWorkerPool(urls[:1], str(workflow_path), queue_depth=1)))
        # ... and also followed by polling /history every 0.2 s: the pool as it was before the websocket.
        results.log("one_worker_polling", time_rounds(ComfyWorkerPool(urls[:1], str(workflow_path),
                                                                      use_websocket=False, queue_depth=1)))
        if len(urls) > 1:
            results.log("two_workers", time_rounds(ComfyWorkerPool(urls, str(workflow_path))))
            results.log("round_wall_ratio_two_over_one",
                        round(results["two_workers"]["round_wall_s"] / results["one_worker"]["round_wall_s"], 3))
    finally:
        for _url, process in servers:
            stop_process(process, timeout=20)
        shutil.rmtree(work, ignore_errors=True)
    results.print_final()


if __name__ == "__main__":
    main()
