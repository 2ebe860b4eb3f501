"""Fakes of exactly the ComfyUI modules the pack's nodes/ import, for contract tests in CI (ComfyUI is not on any
package registry, and its code is never part of this project).

The fakes live here under their own names; `install()` registers them in sys.modules under the names ComfyUI's
modules have (`comfy.utils`, `folder_paths`, `server`, ...), so `import comfy.utils` inside the pack finds them.
"""
import importlib
import sys
import types

# ComfyUI module name -> fake module in this package
FAKES = {
    "comfy.model_management": "fake_model_management",
    "comfy.utils": "fake_utils",
    "comfy.model_patcher": "fake_model_patcher",
    "comfy.samplers": "fake_samplers",
    "comfy.sample": "fake_sample",
    "comfy.sd": "fake_sd",
    "folder_paths": "fake_folder_paths",
    "server": "fake_server",
    "node_helpers": "fake_node_helpers",
    "latent_preview": "fake_latent_preview",
}


def install() -> None:
    """Make the fakes importable under ComfyUI's module names (idempotent)."""
    if "comfy" not in sys.modules:
        package = types.ModuleType("comfy", "fake ComfyUI `comfy` package (tests/comfy_fakes)")
        package.__path__ = []
        sys.modules["comfy"] = package
    comfy = sys.modules["comfy"]
    for name, fake in FAKES.items():
        if name not in sys.modules:
            sys.modules[name] = importlib.import_module(f"{__name__}.{fake}")
        if name.startswith("comfy."):
            setattr(comfy, name.split(".", 1)[1], sys.modules[name])
