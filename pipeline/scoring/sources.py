"""Where the scorer's models come from, decided without loading them (see pipeline/sources.py).

`resolve_clip` wraps the CLIP id rule (`clip.parse_clip_id`) and the hub cache; `resolve_aesthetic` wraps the
aesthetic head rule (`aesthetic.resolve_aesthetic_path`, without downloading); `check_head_fits_clip` refuses a
LAION-style head whose width does not fit the CLIP. `load_scorer`, `search`'s flag checks, `doctor` and the
scorer node all call these.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from ..errors import InvalidParameter, ModelNotFound
from ..sources import ModelSource, fail, hub_source, ok, warn
from . import aesthetic
from .clip import configured_embed_dim, parse_clip_id

OPEN_CLIP_SIZES = {"ViT-L-14/openai": "about 1.7 GB", "ViT-B-32/openai": "about 0.6 GB"}   # fp32 safetensors
OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def resolve_clip(spec: Optional[str]) -> ModelSource:
    """form "local-dir" | "hub" (hf-hub:) | "file" (ARCH with a weights file) | "pretrained" (ARCH/TAG)."""
    spec = (spec or "").strip()
    try:
        name, tag = parse_clip_id(spec)          # the loader's own rule: same checks, same messages
    except (InvalidParameter, ModelNotFound) as exc:
        return fail(InvalidParameter.bare(exc), invalid=True, error=exc)
    if name.startswith("local-dir:"):
        folder = name[len("local-dir:"):]
        return ok(f"local folder {folder}", form="local-dir", location=folder)
    if name.startswith("hf-hub:"):
        return hub_source(name[len("hf-hub:"):].strip("/"), "open_clip hub model", ("open_clip_config.json",),
                          "several hundred MB")
    if tag and os.path.isfile(tag):
        return ok(f"open_clip {name} with weights file {os.path.abspath(tag)}", form="file",
                  location=os.path.abspath(tag))
    return _pretrained_source(name, tag)


def _pretrained_source(arch: str, tag: str) -> ModelSource:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    name = f"{arch}/{tag}"
    hub = (cfg.get("hf_hub") or "").strip()
    if hub:
        repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        files = (filename,) if filename else OPEN_CLIP_WEIGHT_FILES
        return hub_source(repo, f"open_clip {name} from", files, OPEN_CLIP_SIZES.get(name, "up to a few GB"))
    url = cfg.get("url") or ""
    if url and os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))):
        return ok(f"open_clip {name} (in ~/.cache/clip)", form="pretrained", location=name)
    return warn(f"open_clip {name}: not downloaded yet", "the first run downloads it", form="pretrained",
                location=name)


def resolve_aesthetic(spec: Optional[str], search_dirs=()) -> ModelSource:
    """form "package" (v2.5, SigLIP) | "file" (a LAION-style head); LAION's default head not yet downloaded is
    a warning (the loader downloads it, sha256-checked)."""
    name = (spec or "").strip()
    if aesthetic.is_v25(name):
        try:
            import aesthetic_predictor_v2_5  # noqa: F401
        except ImportError as exc:
            return fail("aesthetic-predictor-v2.5 is not installed", "pip install aesthetic-predictor-v2-5",
                        invalid=True, error=ModelNotFound(f"aesthetic-predictor-v2.5 is not installed ({exc}); "
                                                          "pip install aesthetic-predictor-v2-5"))
        return ok("aesthetic-predictor-v2.5 (SigLIP)", form="package", location="v2.5")
    try:
        path = aesthetic.resolve_aesthetic_path(name, search_dirs, allow_download=False)
        return ok(path, form="file", location=path)
    except ModelNotFound as exc:
        if name.lower() in aesthetic.LAION_NAMES or os.path.basename(name) == aesthetic.LAION_FILENAME:
            target = os.path.join(search_dirs[0] if search_dirs else aesthetic.default_aesthetic_dir(),
                                  aesthetic.LAION_FILENAME)
            return warn(f"LAION head not downloaded yet ({target})",
                        f"the first run downloads it (3.7 MB) from {aesthetic.LAION_URL}", form="file",
                        location=target)
        return fail(str(exc), invalid=True, error=exc)


def check_head_fits_clip(aesthetic_spec: Optional[str], clip_spec: Optional[str], flag: str = "aesthetic") -> None:
    """A LAION-style head reads one CLIP's embedding width: refuse a mismatch before loading either."""
    if aesthetic.is_v25(aesthetic_spec):
        return
    try:
        path = aesthetic.resolve_aesthetic_path(aesthetic_spec, allow_download=False)
    except ModelNotFound:
        return                                    # LAION's default head, downloaded on first use (ViT-L-14 width)
    width = _local_dir_embed_dim(clip_spec) if (clip_spec or "").startswith("local-dir:") else \
        configured_embed_dim(clip_spec)
    if width is None:
        return
    try:
        aesthetic.check_head_fits(aesthetic.load_laion_head(path).input_dim, width, clip_spec, path)
    except (InvalidParameter, ModelNotFound) as exc:
        raise InvalidParameter(flag, InvalidParameter.bare(exc)) from None


def _local_dir_embed_dim(clip_spec: str) -> Optional[int]:
    path = os.path.join(os.path.expanduser(clip_spec[len("local-dir:"):]), "open_clip_config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            width = json.load(handle).get("model_cfg", {}).get("embed_dim")
    except (OSError, ValueError, AttributeError) as exc:
        raise InvalidParameter("clip", f"{path} is not a readable open_clip config ({exc})") from None
    return width if isinstance(width, int) else None
