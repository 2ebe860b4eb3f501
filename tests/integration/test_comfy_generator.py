"""Prompt Beam's generator nodes on a real ComfyUI: the image equals the standard core-node chain's, pixel for pixel.

Graphs go through POST /prompt like any API client's. MODEL is the test pack's tiny Flux; CLIP and VAE are tiny
random files loaded by the real CLIPLoader and VAELoader; the LoRA goes through the real load_lora_for_models.
"""
import time
import uuid

import numpy as np
import pytest
from PIL import Image

SIZE = 64
STEPS = 4


def models(flux_seed=0):
    return {
        "flux": {"class_type": "PromptBeamTestTinyFlux", "inputs": {"seed": flux_seed}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": "tiny_clip_l.safetensors",
                                                        "type": "stable_diffusion"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_taef1.safetensors"}},
    }


def prompt_beam_branch(tag, prompt, seed, loras=None, steps=STEPS, guidance=3.5, sampler="euler", scheduler="simple"):
    """[LoraStack ->] PromptBeamFluxGenerator -> PromptBeamGenerate -> SaveImage, node ids prefixed by `tag`."""
    graph = {
        f"{tag}_gen": {"class_type": "PromptBeamFluxGenerator", "inputs": {
            "model": ["flux", 0], "clip": ["clip", 0], "vae": ["vae", 0], "width": SIZE, "height": SIZE,
            "steps": steps, "guidance": guidance, "sampler_name": sampler, "scheduler": scheduler}},
        f"{tag}_image": {"class_type": "PromptBeamGenerate", "inputs": {
            "generator": [f"{tag}_gen", 0], "prompt": prompt, "seed": seed}},
        f"{tag}_save": {"class_type": "SaveImage", "inputs": {"images": [f"{tag}_image", 0], "filename_prefix": tag}},
    }
    previous = None
    for index, (lora_name, trigger, weight) in enumerate(loras or ()):
        node = {"class_type": "PromptBeamLoraStack",
                "inputs": {"lora_name": lora_name, "trigger": trigger, "weight": weight}}
        if previous:
            node["inputs"]["loras"] = [previous, 0]
        previous = f"{tag}_lora{index}"
        graph[previous] = node
    if previous:
        graph[f"{tag}_gen"]["inputs"]["loras"] = [previous, 0]
    return graph


def standard_branch(tag, text, seed, lora=None, steps=STEPS, guidance=3.5, sampler="euler", scheduler="simple"):
    """[LoraLoader ->] CLIPTextEncode -> FluxGuidance -> KSampler(EmptySD3LatentImage, cfg 1) -> VAEDecode."""
    model, clip = ["flux", 0], ["clip", 0]
    graph = {}
    if lora:
        lora_name, weight = lora
        graph[f"{tag}_lora"] = {"class_type": "LoraLoader", "inputs": {
            "model": model, "clip": clip, "lora_name": lora_name, "strength_model": weight, "strength_clip": weight}}
        model, clip = [f"{tag}_lora", 0], [f"{tag}_lora", 1]
    graph.update({
        f"{tag}_pos": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": clip}},
        f"{tag}_guidance": {"class_type": "FluxGuidance", "inputs": {"conditioning": [f"{tag}_pos", 0],
                                                                    "guidance": guidance}},
        f"{tag}_neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
        f"{tag}_latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": SIZE, "height": SIZE,
                                                                          "batch_size": 1}},
        f"{tag}_sample": {"class_type": "KSampler", "inputs": {
            "model": model, "seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": sampler,
            "scheduler": scheduler, "positive": [f"{tag}_guidance", 0], "negative": [f"{tag}_neg", 0],
            "latent_image": [f"{tag}_latent", 0], "denoise": 1.0}},
        f"{tag}_decode": {"class_type": "VAEDecode", "inputs": {"samples": [f"{tag}_sample", 0], "vae": ["vae", 0]}},
        f"{tag}_save": {"class_type": "SaveImage", "inputs": {"images": [f"{tag}_decode", 0], "filename_prefix": tag}},
    })
    return graph


def pixels(server, entry, tag) -> np.ndarray:
    (path,) = server.images(entry, f"{tag}_save")
    with Image.open(path) as image:
        assert image.size == (SIZE, SIZE)
        return np.asarray(image.convert("RGB"))


def run_seconds(entry) -> float:
    """Execution time of a finished prompt, from the timestamps in its history messages (ms)."""
    stamps = {event: data["timestamp"] for event, data in entry["status"]["messages"] if "timestamp" in data}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0


def unique_tag(name):
    return f"{name}_{uuid.uuid4().hex[:6]}"


def test_generator_image_equals_the_standard_chain_pixel_for_pixel(comfy_server):
    tag = unique_tag("eq")
    graph = {**models(),
             **prompt_beam_branch(f"{tag}pb", "a red fox in the snow", 42),
             **standard_branch(f"{tag}std", "a red fox in the snow", 42),
             **standard_branch(f"{tag}seed", "a red fox in the snow", 43),
             **standard_branch(f"{tag}text", "a lighthouse at night", 42),
             # An ancestral sampler draws fresh noise from the seed inside KSampler: the seed must reach it too.
             **prompt_beam_branch(f"{tag}pbanc", "a red fox in the snow", 42, sampler="euler_ancestral",
                                  scheduler="beta", guidance=5.0),
             **standard_branch(f"{tag}stdanc", "a red fox in the snow", 42, sampler="euler_ancestral",
                               scheduler="beta", guidance=5.0)}
    entry = comfy_server.run(graph)
    assert entry["status"]["status_str"] == "success", entry["status"]
    ours, theirs = pixels(comfy_server, entry, f"{tag}pb"), pixels(comfy_server, entry, f"{tag}std")
    assert np.array_equal(ours, theirs)
    assert ours.std() > 5, "the test image is flat: the comparison would prove nothing"
    # The comparison can fail: another seed or another prompt gives another picture.
    assert not np.array_equal(ours, pixels(comfy_server, entry, f"{tag}seed"))
    assert not np.array_equal(ours, pixels(comfy_server, entry, f"{tag}text"))
    ancestral = pixels(comfy_server, entry, f"{tag}pbanc")
    assert np.array_equal(ancestral, pixels(comfy_server, entry, f"{tag}stdanc"))
    assert not np.array_equal(ancestral, ours)
    print(f"\n[real ComfyUI] 6 branches x {STEPS} steps at {SIZE}px: {run_seconds(entry):.2f}s "
          f"(server startup {comfy_server.startup_s:.1f}s)")


def test_lora_and_trigger_equal_lora_loader_plus_trigger_text(comfy_server):
    tag = unique_tag("lora")
    lora = ("tiny_flux_lora.safetensors", "pbstyle", 0.8)
    graph = {**models(),
             **prompt_beam_branch(f"{tag}pb", "a red fox", 7, loras=[lora]),
             **standard_branch(f"{tag}std", "pbstyle, a red fox", 7, lora=(lora[0], lora[2])),
             **standard_branch(f"{tag}plain", "pbstyle, a red fox", 7)}
    entry = comfy_server.run(graph)
    ours = pixels(comfy_server, entry, f"{tag}pb")
    assert np.array_equal(ours, pixels(comfy_server, entry, f"{tag}std"))
    assert not np.array_equal(ours, pixels(comfy_server, entry, f"{tag}plain")), "the LoRA changed nothing"
    assert "lora key not loaded" not in comfy_server.log()


def test_generator_with_loras_is_built_once_and_reused_across_prompts(comfy_server):
    tag = unique_tag("cache")
    lora = ("tiny_flux_lora.safetensors", "pbstyle", 0.5)
    ws = comfy_server.websocket()
    try:
        first = comfy_server.post_prompt({**models(), **prompt_beam_branch(tag, "a cat", 1, loras=[lora])},
                                         client_id=ws.client_id)
        comfy_server.wait_history(first["prompt_id"])
        second = comfy_server.post_prompt({**models(), **prompt_beam_branch(tag, "a cat", 2, loras=[lora])},
                                          client_id=ws.client_id)
        entry = comfy_server.wait_history(second["prompt_id"])
        assert entry["status"]["status_str"] == "success"
        cached = ws.wait_for(lambda m: m.get("type") == "execution_cached"
                             and m["data"]["prompt_id"] == second["prompt_id"])["data"]["nodes"]
        executing = {e["node"] for e in ws.events("executing", second["prompt_id"]) if e.get("node")}
    finally:
        ws.close()
    # Only the seed changed: the LoRA stack and the generator (LoRAs patched in) come from ComfyUI's cache.
    assert {f"{tag}_lora0", f"{tag}_gen"} <= set(cached)
    assert f"{tag}_image" in executing and f"{tag}_gen" not in executing


def test_progress_and_previews_arrive_over_the_websocket(comfy_server):
    tag = unique_tag("progress")
    steps = 6
    ws = comfy_server.websocket()
    try:
        queued = comfy_server.post_prompt({**models(), **prompt_beam_branch(tag, "a blue bird", 5, steps=steps)},
                                          client_id=ws.client_id)
        prompt_id = queued["prompt_id"]
        ws.wait_for(lambda m: m.get("type") == "execution_success" and m["data"]["prompt_id"] == prompt_id)
        progress = [(p["value"], p["max"]) for p in ws.events("progress", prompt_id) if p["node"] == f"{tag}_image"]
        previews = ws.binary()
        executed = [e["node"] for e in ws.events("executed", prompt_id)]
    finally:
        ws.close()
    assert progress == [(i, steps) for i in range(1, steps + 1)]
    # Binary frames: event 1 (PREVIEW_IMAGE), then the image type (1 = JPEG) and a JPEG per sampler step.
    assert len(previews) >= steps
    assert all(p["event"] == 1 and p["data"][4:6] == b"\xff\xd8" for p in previews)
    assert f"{tag}_save" in executed


@pytest.mark.parametrize("lora_name, expected", [
    ("../escape.safetensors", "is a path"),
    ("/etc/hostname", "is a path"),
    ("no_such_lora.safetensors", "was not found. Searched the loras folders:"),
])
def test_bad_lora_name_is_refused_in_node_errors_naming_lora_name(comfy_server, lora_name, expected):
    tag = unique_tag("badlora")
    queued = comfy_server.post_prompt({**models(), **prompt_beam_branch(tag, "a fox", 1,
                                                                        loras=[(lora_name, "", 1.0)])})
    assert queued["prompt_id"] is None and queued["status"] == 400, queued["body"]
    (error,) = queued["node_errors"][f"{tag}_lora0"]["errors"]
    assert error["extra_info"]["input_name"] == "lora_name"
    assert error["details"].startswith("lora_name - ") and expected in error["details"]
    if "not found" in expected:
        assert str(comfy_server.base / "models" / "loras") in error["details"]


def test_lora_for_another_architecture_fails_with_a_clear_message(comfy_server):
    tag = unique_tag("foreign")
    queued = comfy_server.post_prompt({**models(), **prompt_beam_branch(
        tag, "a fox", 1, loras=[("sdxl_unet_lora.safetensors", "", 1.0)])})
    entry = comfy_server.wait_history(queued["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    (error,) = [data for event, data in entry["status"]["messages"] if event == "execution_error"]
    assert error["node_type"] == "PromptBeamFluxGenerator" and error["exception_type"].endswith("InvalidParameter")
    assert "LoRA 'sdxl_unet_lora.safetensors' doesn't match this model" in error["exception_message"]


def test_interrupt_stops_a_long_generation(comfy_server):
    tag = unique_tag("interrupt")
    steps = 3000
    ws = comfy_server.websocket()
    try:
        queued = comfy_server.post_prompt({**models(), **prompt_beam_branch(tag, "a slow fox", 3, steps=steps)},
                                          client_id=ws.client_id)
        prompt_id = queued["prompt_id"]
        ws.wait_for(lambda m: m.get("type") == "progress" and m["data"]["node"] == f"{tag}_image", timeout=60)
        pressed = time.monotonic()
        comfy_server.interrupt()
        interrupted = ws.wait_for(lambda m: m.get("type") == "execution_interrupted"
                                  and m["data"]["prompt_id"] == prompt_id, timeout=30)
        reaction_s = time.monotonic() - pressed
        last_step = max(p["value"] for p in ws.events("progress", prompt_id) if p["node"] == f"{tag}_image")
    finally:
        ws.close()
    assert interrupted["data"]["node_type"] == "PromptBeamGenerate"
    assert last_step < steps
    entry = comfy_server.wait_history(prompt_id)
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    print(f"\n[real ComfyUI] interrupt took effect after {reaction_s * 1000:.0f} ms, at step {last_step}/{steps}")


def many_branch(tag, prompts, seed, sampler="euler", scheduler="simple", max_batch=4, expect_batches=""):
    """PromptBeamFluxGenerator -> (test node) generator.generate(all prompts, seeds seed, seed+1, ...) -> SaveImage."""
    return {
        f"{tag}_gen": {"class_type": "PromptBeamFluxGenerator", "inputs": {
            "model": ["flux", 0], "clip": ["clip", 0], "vae": ["vae", 0], "width": SIZE, "height": SIZE,
            "steps": STEPS, "guidance": 3.5, "sampler_name": sampler, "scheduler": scheduler}},
        f"{tag}_many": {"class_type": "PromptBeamTestGenerateMany", "inputs": {
            "generator": [f"{tag}_gen", 0], "prompts": "\n".join(prompts), "seed": seed, "max_batch": max_batch,
            "expect_batches": expect_batches}},
        f"{tag}_save": {"class_type": "SaveImage", "inputs": {"images": [f"{tag}_many", 0], "filename_prefix": tag}},
    }


def batch_pixels(server, entry, tag) -> list:
    out = []
    for path in server.images(entry, f"{tag}_save"):
        with Image.open(path) as image:
            out.append(np.asarray(image.convert("RGB")))
    return out


@pytest.mark.parametrize("sampler, scheduler, batches", [("euler", "simple", "3"),
                                                         ("euler_ancestral", "beta", "1,1,1")])
def test_a_batch_renders_image_i_as_ksampler_with_seed_i(comfy_server, sampler, scheduler, batches):
    """max_batch > 1: a deterministic sampler renders the requests as ONE batch, each with its own seed's noise; an
    ancestral one renders them one by one. Either way image i equals KSampler + VAEDecode with seed i — here, on
    the CPU in fp32, to the 8-bit rounding step (on a GPU in bf16 the batch rounds differently: see
    docs/performance.md)."""
    tag = unique_tag("many")
    prompts = ["a red fox in the snow", "a lighthouse at night", "a bowl of ripe pears on a table"]
    graph = {**models(), **many_branch(f"{tag}b", prompts, 42, sampler, scheduler, expect_batches=batches)}
    for i, text in enumerate(prompts):
        graph.update(standard_branch(f"{tag}s{i}", text, 42 + i, sampler=sampler, scheduler=scheduler))
    entry = comfy_server.run(graph)
    assert entry["status"]["status_str"] == "success", entry["status"]
    batch = batch_pixels(comfy_server, entry, f"{tag}b")
    singles = [pixels(comfy_server, entry, f"{tag}s{i}") for i in range(len(prompts))]
    assert len(batch) == len(prompts)
    for ours, theirs in zip(batch, singles):
        # The same floats to ~1e-6: a value on an 8-bit rounding boundary may land one step away (seen with torch
        # 2.14 on the CPU: 1 to 3 pixels of 12,288 differ by 1). Any real difference (another seed's noise, another
        # prompt) changes most pixels by tens of steps.
        difference = np.abs(ours.astype(int) - theirs.astype(int))
        assert ours.std() > 5 and difference.max() <= 1 and (difference > 0).mean() < 0.001, difference.max()
    assert not np.array_equal(batch[0], batch[1])
