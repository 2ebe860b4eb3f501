"""Prompt Beam for ComfyUI: beam search over LLM-written prompts, rendered with Flux and scored by CLIP + aesthetics.

ComfyUI imports this file by path, as a package named after the pack's folder, so every import inside the pack is
relative.
"""
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    WEB_DIRECTORY = "./web"   # the editor extension: a model picker for the Ollama node
else:
    # Imported as a lone module, outside any package: pytest does this with the __init__.py of a rootdir whose
    # folder name is not a valid package name (e.g. a clone in "comfyui-promptbeam/"). There is no pack to register.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
    WEB_DIRECTORY = None

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
