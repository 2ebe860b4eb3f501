"""Prompt Beam for ComfyUI: beam search over LLM-written prompts, rendered with Flux and scored by CLIP + aesthetics.

ComfyUI imports this file by path, so every import inside the pack is relative.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
