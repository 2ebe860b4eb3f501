"""An HTTP client of a running ComfyUI's API queue (`client`: POST /prompt, /history, /view, /queue, /interrupt,
the websocket) and the reading of API-format workflows it submits (`graph`: which node plays which role — the
sampler, its positive text, the empty latent — found by following links). Used by `python -m pipeline queue`
and by the worker pool of `generation.comfy_workers`.

May import: pipeline.errors. Never imports ComfyUI itself: it speaks to a ComfyUI server over HTTP.
"""
