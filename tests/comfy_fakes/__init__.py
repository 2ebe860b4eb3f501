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
    "comfy_api.v0_0_2": "fake_comfy_api",
}
# Packages that hold the fakes above (ComfyUI's are folders; here they are empty modules).
PACKAGES = ("comfy", "comfy_api")


def install() -> None:
    """Make the fakes importable under ComfyUI's module names (idempotent)."""
    for name in PACKAGES:
        if name not in sys.modules:
            package = types.ModuleType(name, f"fake ComfyUI `{name}` package (tests/comfy_fakes)")
            package.__path__ = []
            sys.modules[name] = package
    for name, fake in FAKES.items():
        if name not in sys.modules:
            sys.modules[name] = importlib.import_module(f"{__name__}.{fake}")
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, sys.modules[name])
