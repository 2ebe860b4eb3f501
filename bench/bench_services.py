"""Benchmark of the HTTP services' own costs: /health latency while images render, the per-image cost of the
HTTP round trip and of each image transfer (path, png, f32) at 1024², the bounded queue under a burst, and
RemoteScorer against the in-process Scorer on a batch of 1024² images.

These are the services' overheads, not the models': the services run the repo's tiny test models (built here, no
downloads) so the numbers do not depend on a GPU, and a render is made long enough by its size and steps. Both
services run as real subprocesses on loopback, as users run them.

    python bench/bench_services.py            # writes $OUT/bench_services.json (default bench/out)
Env: OUT, SIZE (default 1024), REPEATS (default 5), THREADS (torch threads of the services, default 2).
"""
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import Results  # noqa: E402
from tests.fixtures.servers import free_port  # noqa: E402
from tests.fixtures.tiny_clip import build_tiny_aesthetic, build_tiny_clip  # noqa: E402
from tests.fixtures.tiny_flux import build_tiny_flux  # noqa: E402

SIZE = int(os.environ.get("SIZE", "1024"))
REPEATS = int(os.environ.get("REPEATS", "5"))
THREADS = os.environ.get("THREADS", "2")

result = Results("bench_services", size=SIZE, repeats=REPEATS, threads=THREADS, torch=torch.__version__,
                 cpu_count=os.cpu_count())
log = result.log


def start(module, args, cwd):
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS=THREADS, PYTHONPATH=ROOT)
    process = subprocess.Popen([sys.executable, "-m", module, "--port", str(port), "--device", "cpu", *args],
                               cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{module} did not start")


def median(values):
    return round(statistics.median(values), 4)


def generate(url, **extra):
    body = {"prompt": "a lighthouse on a cliff at dusk", "width": SIZE, "height": SIZE, "steps": 1, "seed": 1,
            "useDefaultLoras": False, **extra}
    started = time.perf_counter()
    response = requests.post(url + "/generate", json=body, timeout=600)
    seconds = time.perf_counter() - started
    return response, seconds


def bench_flux(work):
    from pipeline.generation.diffusers_flux import DiffusersFluxGenerator
    from pipeline.generation import GenerationRequest
    from pipeline.generation.remote_flux import RemoteFluxClient

    model = build_tiny_flux(os.path.join(work, "flux"))
    torch.set_num_threads(int(THREADS))
    local = DiffusersFluxGenerator(str(model), device="cpu")
    request = GenerationRequest("a lighthouse on a cliff at dusk", seed=1, width=SIZE, height=SIZE, steps=1)
    local.generate([request])
    log("in_process_generate_s", median([_timed(lambda: local.generate([request])) for _ in range(REPEATS)]))

    process, url = start("pipeline.services.flux", ["--model", str(model), "--out", os.path.join(work, "out"),
                                                    "--queue-depth", "2"], work)
    try:
        generate(url)
        for form in ("none", "png", "f32"):
            extra = {} if form == "none" else {"returnImage": form}
            log(f"service_generate_{form}_s", median([generate(url, **extra)[1] for _ in range(REPEATS)]))
        for transfer in ("path", "png", "f32"):
            client = RemoteFluxClient(url, transfer=transfer, use_service_loras=False)
            log(f"remote_client_{transfer}_s",
                median([_timed(lambda: client.generate([request])) for _ in range(REPEATS)]))

        # /health while renders run: 3 long renders (one running, two waiting), polled back to back.
        latencies, seen_busy = [], []
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(generate, url, steps=4, seed=i) for i in range(3)]
            time.sleep(0.3)
            while not all(f.done() for f in futures):
                started = time.perf_counter()
                queue = requests.get(url + "/health", timeout=30).json()["queue"]
                latencies.append(time.perf_counter() - started)
                seen_busy.append(queue["running"])
        log("health_polls_during_renders", len(latencies))
        log("health_polls_seeing_a_render", sum(seen_busy))
        log("health_latency_median_s", median(latencies))
        log("health_latency_max_s", round(max(latencies), 4))

        # A burst of 8 at queue depth 2: 1 runs, 2 wait, the rest get 503 at once.
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: generate(url, seed=i), range(8)))
        busy = [(r, s) for r, s in answers if r.status_code == 503]
        log("burst_of_8_accepted", sum(1 for r, _ in answers if r.status_code == 200))
        log("burst_of_8_refused_503", len(busy))
        log("refusal_max_s", round(max((s for _, s in busy), default=0.0), 4))
        log("retry_after_s", sorted({int(r.headers["Retry-After"]) for r, _ in busy}))
    finally:
        process.terminate()
        process.wait()


def bench_vision(work):
    from pipeline.scoring.remote import RemoteScorer
    from pipeline.scoring import load_scorer

    clip = build_tiny_clip(os.path.join(work, "clip"))
    head = build_tiny_aesthetic(os.path.join(work, "head", "tiny-l14-linearMSE.pth"))
    local = load_scorer(f"local-dir:{clip}", aesthetic_model=head, device="cpu")
    smooth = torch.rand(4, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0))
    levels = (smooth * 255).round() / 255
    process, url = start("pipeline.services.vision", ["--clip", f"local-dir:{clip}", "--aesthetic", head], work)
    try:
        remote = RemoteScorer(url)
        for name, images in (("f32", smooth), ("png", levels)):
            local.score(images, "a red fox")
            remote.score(images, "a red fox")
            log(f"in_process_score_batch4_{name}_s",
                median([_timed(lambda: local.score(images, "a red fox")) for _ in range(REPEATS)]))
            log(f"remote_score_batch4_{name}_s",
                median([_timed(lambda: remote.score(images, "a red fox")) for _ in range(REPEATS)]))
        diffs = [abs(a.alignment - b.alignment) + abs(a.aesthetic - b.aesthetic)
                 for a, b in zip(remote.score(smooth, "a red fox"), local.score(smooth, "a red fox"))]
        log("remote_vs_local_max_abs_diff", max(diffs))
    finally:
        process.terminate()
        process.wait()


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main():
    with tempfile.TemporaryDirectory() as work:
        bench_flux(work)
        bench_vision(work)
    result.print_final()


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
