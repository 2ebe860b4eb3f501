"""Prompt Beam core: prompt search over (WHAT, HOW) halves with Flux rendering and CLIP/aesthetic scoring.

This package never imports ComfyUI. Its parts (see docs/architecture.md):

    llm/         Ollama client and the prompt operations        generation/  Flux backends behind one protocol
    scoring/     CLIP alignment + aesthetic head                beam/        the search: plan, render, select
    record/      run directory: report.json, PNGs, viewer        comfy_api/   HTTP client of ComfyUI's API queue
    cli/         `python -m pipeline …`                          services/    the seed's Flux and vision services
    config.py errors.py images.py sources.py                    small shared pieces every part may import

Heavy dependencies (torch, diffusers, open_clip) are imported by the modules that need them, and each part's
package exports its heavy names lazily, so `import pipeline` and `--help` stay cheap.
"""
import importlib

__version__ = "0.1.0"


def lazy_exports(package: str, exports: dict):
    """A module `__getattr__` for `package` that imports `exports[name]` (a submodule) on first use of `name`."""
    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
