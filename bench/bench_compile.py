"""GPU benchmark of --compile and --fp8 through the project's diffusers generator (Flux-schnell size, random weights).

One process measures one MODE; run it twice with the same compile cache to get the cold and then the warm numbers
(the second process finds inductor's kernels in the cache, as a second search on the same machine does):

    export PROMPTBEAM_COMPILE_CACHE=/tmp/promptbeam-compile    # an empty folder for the cold run
    MODE=eager   LABEL=eager        python bench/bench_compile.py
    MODE=compile LABEL=compile-cold python bench/bench_compile.py
    MODE=compile LABEL=compile-warm python bench/bench_compile.py
    MODE=fp8     LABEL=fp8-cold     python bench/bench_compile.py
    MODE=fp8     LABEL=fp8-warm     python bench/bench_compile.py
    FIRST_BATCH=4 MODE=fp8 LABEL=fp8-bs4 python bench/bench_compile.py   # batch 4 only, compiled for it alone
    TINY=1 MODE=compile python bench/bench_compile.py            # miniature model on the CPU: checks the script

Measured, in this order: the warm-up (`DiffusersFluxGenerator.warm_up`: batch 1 then batch 2 at the size, what
`search --compile` does before round 0; for eager the first call instead), then `generate` at batch 1 and batch 4
(median of REPEATS after one untimed call), and whether batch 3 and 4 compiled anything after the warm-up.
Writes OUT/bench_compile_<LABEL>.json. Env: SIZE (1024), REPEATS (3), STEPS (4).
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import Results, device_name, median_seconds, _sync  # noqa: E402
from bench_flux import DEVICE, DTYPE, PROMPTS, SIZE, STEPS, TINY, build_pipeline, random_prompt_encoder  # noqa: E402
from pipeline.generation.diffusers_flux import DiffusersFluxGenerator  # noqa: E402
from pipeline.generation.protocol import GenerationRequest  # noqa: E402

MODE = os.environ.get("MODE", "eager")
LABEL = os.environ.get("LABEL", MODE)
REPEATS = int(os.environ.get("REPEATS", "2" if TINY else "3"))
FIRST_BATCH = int(os.environ.get("FIRST_BATCH", "0"))       # 4: skip the warm-up, compile and time batch 4 only


def unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def main():
    if MODE not in ("eager", "compile", "fp8"):
        raise SystemExit(f"MODE must be eager, compile or fp8, not {MODE!r}")
    result = Results(f"bench_compile_{LABEL}", mode=MODE, device=device_name(DEVICE), torch=torch.__version__,
                     dtype=str(DTYPE).replace("torch.", ""), size=SIZE, steps=STEPS, tiny=TINY,
                     cache=os.environ.get("PROMPTBEAM_COMPILE_CACHE"))
    log = result.log
    if MODE == "fp8":
        try:
            import torchao
            log("torchao", torchao.__version__)
        except ImportError as exc:
            log("torchao", f"not importable: {exc}")
    pipe = build_pipeline()
    started = time.perf_counter()
    generator = DiffusersFluxGenerator.from_pipeline(
        pipe, model="random-flux-schnell-size", max_batch=4, prompt_encoder=random_prompt_encoder(pipe),
        compile=MODE != "eager", fp8=MODE == "fp8")
    log("setup_s", round(time.perf_counter() - started, 2))           # fp8: quantising the weights
    log("speed", generator.describe()["speed"])
    requests = [GenerationRequest(prompt=p, seed=100 + i, width=SIZE, height=SIZE, steps=STEPS)
                for i, p in enumerate(PROMPTS)]

    _sync()
    started = time.perf_counter()
    if MODE == "eager":
        generator.generate(requests[:1])                                # the first call, for comparison
        log("first_call_s", round(time.perf_counter() - started, 2))
    elif FIRST_BATCH == 4:
        # No warm-up: the first call is a batch of 4, compiled for that batch size alone (static shapes), then
        # only batch 4 is timed (a batch 1 afterwards would compile the batch dimension as dynamic). For fp8,
        # whose cold dynamic compile outlasts a 10-minute run, this measures its batch-4 speed.
        generator.generate(requests)
        _sync()
        log("first_call_bs4_s", round(time.perf_counter() - started, 2))
        bs4 = median_seconds(lambda: generator.generate(requests), REPEATS)
        log("bs4_s", bs4)
        log("bs4_per_image_s", round(bs4 / 4, 4))
        if DEVICE == "cuda":
            log("peak_mem_GB", round(torch.cuda.max_memory_allocated() / 2**30, 1))
        result.print_final()
        return
    elif os.environ.get("STEPWISE") == "1":
        # Batch 1 first and measured before the batch-2 compile starts: a run stopped at its time limit (fp8
        # compiles for minutes when cold) still has its batch-1 numbers.
        generator.max_batch = 1
        done = generator.warm_up(requests[0])
        _sync()
        log("warm_up_bs1_s", round(time.perf_counter() - started, 2))
        log("bs1_s", median_seconds(lambda: generator.generate(requests[:1]), REPEATS))
        generator.max_batch = 4
        started = time.perf_counter()
        done = generator.warm_up(requests[0])
        _sync()
        log("warm_up_bs2_s", round(time.perf_counter() - started, 2))
        log("warm_up_warning", done["warning"])
    else:
        done = generator.warm_up(requests[0])
        _sync()
        log("warm_up_s", round(time.perf_counter() - started, 2))
        log("warm_up_warning", done["warning"])
        log("status_after_warm_up", generator.speed.status)
    graphs = unique_graphs()
    bs1 = median_seconds(lambda: generator.generate(requests[:1]), REPEATS)
    log("bs1_s", bs1)
    bs4 = median_seconds(lambda: generator.generate(requests), REPEATS)
    log("bs4_s", bs4)
    log("bs4_per_image_s", round(bs4 / 4, 4))
    generator.generate(requests[:3])
    log("graphs_compiled_after_warm_up", unique_graphs() - graphs)
    if MODE != "eager" and os.environ.get("OTHER_SIZE") != "0":
        # Another image size: one more compile (the image token count becomes dynamic), then none.
        other = [GenerationRequest(prompt=PROMPTS[0], seed=1, width=SIZE // 2, height=SIZE // 2, steps=STEPS)]
        graphs = unique_graphs()
        _sync()
        started = time.perf_counter()
        generator.generate(other)
        _sync()
        log("other_size_first_call_s", round(time.perf_counter() - started, 2))
        log("other_size_graphs_compiled", unique_graphs() - graphs)
    if DEVICE == "cuda":
        log("peak_mem_GB", round(torch.cuda.max_memory_allocated() / 2**30, 1))
    result.print_final()


if __name__ == "__main__":
    main()
