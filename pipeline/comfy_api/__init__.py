"""An HTTP client of a running ComfyUI's API queue (`client`: POST /prompt, /history, /view, /interrupt, the
websocket) and the editing of API-format workflows it submits. Used by `python -m pipeline queue`.

May import: pipeline.errors. Never imports ComfyUI itself: it speaks to a ComfyUI server over HTTP.
"""
