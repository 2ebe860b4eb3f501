"""Prompt Beam core: prompt search over (WHAT, HOW) halves with Flux rendering and CLIP/aesthetic scoring.

This package never imports ComfyUI. Heavy dependencies (torch, diffusers, open_clip) are imported by the
modules that need them, so `import pipeline` stays cheap.
"""

__version__ = "0.1.0"
