"""ComfyUI adapters, declared with ComfyUI's V3 node schema through the versioned API `comfy_api.v0_0_2`.

Each module lists its node classes in `NODES`; this file gathers them into one ComfyExtension (`comfy_entrypoint`)
and into the NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS derived from the same classes, so a ComfyUI that
registers the pack through either gets the same nodes (docs/architecture.md, "How ComfyUI registers the nodes").

On a ComfyUI without that API the pack registers nothing and says so in one line, instead of failing with an
import traceback. This is the only package that imports ComfyUI modules (comfy.*, comfy_api, folder_paths, server).
"""
import logging

log = logging.getLogger(__name__)
MIN_COMFYUI = "0.3.48"          # the first ComfyUI release with comfy_api.v0_0_2 (and the V3 loader)
API_MODULE = "comfy_api.v0_0_2"


def _has_v3_api() -> bool:
    try:
        import comfy_api.v0_0_2  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name not in ("comfy_api", API_MODULE):   # a broken ComfyUI install: its own traceback says more
            raise
        return False
    return True


def _comfyui_version() -> str:
    try:
        from comfyui_version import __version__
        return __version__
    except ImportError:          # releases before 0.3.2x had no version module
        return "unknown"


SUPPORTED = _has_v3_api()

if SUPPORTED:
    from comfy_api.v0_0_2 import ComfyExtension, io

    from . import generation_nodes, judge_nodes, llm_nodes, remote_nodes, scoring_nodes, search_node, workers_node
    from . import routes, run_routes  # noqa: F401  (add the HTTP routes when ComfyUI's server is running)

    # A new node module goes here; the order is the order of the node lists in the editor's search results.
    NODES = [*llm_nodes.NODES, *scoring_nodes.NODES, *generation_nodes.NODES, *search_node.NODES,
             *remote_nodes.NODES, *workers_node.NODES, *judge_nodes.NODES]

    class PromptBeamExtension(ComfyExtension):
        async def get_node_list(self) -> list[type[io.ComfyNode]]:
            return list(NODES)

    async def comfy_entrypoint() -> PromptBeamExtension:
        return PromptBeamExtension()

    # What ComfyUI's V3 loader registers from the extension (nodes.py, load_custom_node), built the same way.
    _SCHEMAS = [(node, node.define_schema()) for node in NODES]
    NODE_CLASS_MAPPINGS = {schema.node_id: node for node, schema in _SCHEMAS}
    NODE_DISPLAY_NAME_MAPPINGS = {schema.node_id: schema.display_name for _, schema in _SCHEMAS}
else:
    log.error("Prompt Beam needs ComfyUI %s or newer (its V3 node API, %s); this ComfyUI is %s: update ComfyUI "
              "and restart. No Prompt Beam nodes are loaded.", MIN_COMFYUI, API_MODULE, _comfyui_version())
    NODES = []
    NODE_CLASS_MAPPINGS = NODE_DISPLAY_NAME_MAPPINGS = None
