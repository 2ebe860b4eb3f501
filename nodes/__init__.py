"""ComfyUI adapters. Each module declares its nodes; this file merges their mappings.

This is the only package that imports ComfyUI modules (comfy.*, folder_paths, server).
"""
from . import llm_nodes, scoring_nodes, generation_nodes, search_node
from . import remote_nodes, workers_node
from . import routes, run_routes  # noqa: F401  (add the HTTP routes when ComfyUI's server is running)

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (llm_nodes, scoring_nodes, generation_nodes, search_node, remote_nodes, workers_node):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
