"""Where a Flux model and its LoRAs come from, decided without loading them (see pipeline/sources.py).

`resolve_flux` is the one rule for a `--flux` / FLUX_MODEL spec: a diffusers folder, a single-file transformer
(whose other components come from a base), or a hub id. The diffusers loader, `search`'s flag checks and
`doctor` all call it, so they agree on what a spec means.
"""
from __future__ import annotations

import os
import re
from typing import Optional, Sequence

from ..config import DEFAULT_FLUX_MODEL, LoraSpec
from ..errors import ModelNotFound
from ..sources import ModelSource, fail, hub_source, ok
from .loras import check_lora_keys, default_lora_dirs, resolve_lora_file

SINGLE_FILE_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Download sizes users ask about before a first run (hub file listings, rounded).
KNOWN_SIZES = {
    "black-forest-labs/FLUX.1-schnell": "about 34 GB",
    "black-forest-labs/FLUX.1-dev": "about 34 GB",
}


def looks_like_path(name: str) -> bool:
    """A local file or folder rather than a hub id (`org/name`)."""
    return (name.startswith((".", "/", "~", "\\")) or name.lower().endswith(SINGLE_FILE_SUFFIXES)
            or not _HUB_ID.match(name) or (len(name) > 1 and name[1] == ":"))


def resolve_flux(spec: Optional[str], base: Optional[str] = None) -> ModelSource:
    """form "folder" | "hub" (FluxPipeline.from_pretrained(location)) or "single-file" (a transformer file at
    location, the other components from `base`, default FLUX.1-schnell)."""
    spec = (spec or "").strip()
    if not spec:
        return fail("no Flux model given", "pass --flux or set FLUX_MODEL", invalid=True)
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "model_index.json")):
            return ok(f"local diffusers folder {os.path.abspath(path)}", form="folder", location=os.path.abspath(path))
        return fail(f"{path} has no model_index.json, so it is not a diffusers pipeline folder",
                    "give a folder saved with FluxPipeline.save_pretrained (or downloaded from the hub), or a "
                    "single-file .safetensors transformer", invalid=True)
    if os.path.isfile(path):
        if not path.lower().endswith(SINGLE_FILE_SUFFIXES):
            return fail(f"{path} is not a Flux transformer file ({', '.join(SINGLE_FILE_SUFFIXES)})",
                        "give a diffusers folder, a hub id, or a single-file .safetensors Flux transformer",
                        invalid=True)
        components = resolve_flux_base(base or DEFAULT_FLUX_MODEL)
        components.detail = f"single-file transformer {os.path.abspath(path)}; other parts: {components.detail}"
        if components.usable:
            components.form, components.location = "single-file", os.path.abspath(path)
        return components
    if looks_like_path(spec):
        where = f"no such file or folder ({os.path.abspath(path)})"
        return fail(f"{spec} not found: {where}", "check the path (a diffusers folder, a .safetensors transformer, "
                    "or a hub id like black-forest-labs/FLUX.1-schnell)", invalid=True,
                    error=ModelNotFound(f"model {spec!r} not found: {where}"))
    return hub_source(spec, "hub id", ("model_index.json",), KNOWN_SIZES.get(spec, "several GB"))


def resolve_flux_base(base: str) -> ModelSource:
    """The components (VAE, text encoders, scheduler) a single-file transformer borrows: a folder or hub id."""
    path = os.path.expanduser(base)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "model_index.json")):
            return ok(f"diffusers folder {os.path.abspath(path)}", form="folder", location=os.path.abspath(path))
        return fail(f"base {path} has no model_index.json", "give a diffusers Flux pipeline folder or hub id",
                    invalid=True)
    if looks_like_path(base):
        where = f"no such file or folder ({os.path.abspath(path)})"
        return fail(f"base {base} not found: {where}", "give a diffusers Flux pipeline folder or hub id",
                    invalid=True, error=ModelNotFound(f"base {base!r} not found: {where}"))
    return hub_source(base, "hub id", ("model_index.json",), "several GB")


def resolve_loras(loras: Sequence[LoraSpec], lora_dirs: Optional[Sequence[str]] = None) -> ModelSource:
    """Each file found the way the generator will look for it, and holding Flux (not SD/SDXL) keys."""
    if not loras:
        return ok("none")
    dirs = default_lora_dirs() if lora_dirs is None else lora_dirs
    found = []
    for lora in loras:
        try:
            file = resolve_lora_file(lora.path, dirs)
            check_lora_keys(file)
        except ModelNotFound as exc:
            return fail(str(exc), invalid=True)
        found.append(f"{file} x{lora.weight:g}" + (f" (trigger {lora.trigger!r})" if lora.trigger else ""))
    return ok(", ".join(found), form="file")
