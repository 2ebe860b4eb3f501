"""Prompt Beam for ComfyUI: beam search over LLM-written prompts, rendered with Flux and scored by CLIP + aesthetics.

ComfyUI imports this file by path, as a package named after the pack's folder, so every import inside the pack is
relative. The nodes are V3 nodes (comfy_api.v0_0_2). ComfyUI registers them from NODE_CLASS_MAPPINGS when a module
has it, and otherwise from comfy_entrypoint; both list the same classes (docs/architecture.md).
"""
if __package__:
    from .nodes import SUPPORTED

    if SUPPORTED:
        from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, comfy_entrypoint
        WEB_DIRECTORY = "./web"   # the editor extension (model picker, run viewer) and the nodes' help pages
    else:
        # A ComfyUI without the V3 API: nodes/ has said so in one line. Nothing is registered, and ComfyUI lists
        # the pack as not loaded instead of showing an import traceback.
        NODE_CLASS_MAPPINGS = NODE_DISPLAY_NAME_MAPPINGS = WEB_DIRECTORY = None
else:
    # Imported as a lone module, outside any package: pytest does this with the __init__.py of a rootdir whose
    # folder name is not a valid package name (e.g. a clone in "comfyui-promptbeam/"). There is no pack to register.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
    WEB_DIRECTORY = None

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
if "comfy_entrypoint" in globals():
    __all__.append("comfy_entrypoint")
