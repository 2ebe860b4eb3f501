"""Shared test setup. Each fixtures module is owned by one area of the pack:

- tests/fixtures/ollama.py     fake Ollama HTTP server on loopback (scripted replies, recorded requests)
- tests/fixtures/tiny_clip.py  tiny random open_clip model via `local-dir:` + LAION-layout aesthetic head
- tests/fixtures/tiny_flux.py  tiny random diffusers Flux pipeline saved as a diffusers folder
- tests/fixtures/tiny_rewards.py  tiny PickScore (transformers CLIP folder) and HPSv2 (state dict + open_clip arch)
- tests/fixtures/comfy.py      the fake ComfyUI modules and a loader that imports the pack as ComfyUI does
- tests/fixtures/comfy_worker.py  a loopback ComfyUI-protocol server standing in for render workers
"""
pytest_plugins = [
    "tests.fixtures.ollama",
    "tests.fixtures.tiny_clip",
    "tests.fixtures.tiny_flux",
    "tests.fixtures.tiny_rewards",
    "tests.fixtures.comfy",
    "tests.fixtures.comfy_worker",
]
