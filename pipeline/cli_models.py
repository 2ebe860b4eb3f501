"""Where each model a search needs will come from, found without loading anything.

`search` uses these to reject a bad flag before a multi-gigabyte load; `doctor` prints them as a checklist.
Each inspect_* returns a Finding: status "ok", "warn" (works, but e.g. downloads on first use) or "fail";
`invalid=True` marks a failure caused by the parameter itself (a path that does not exist, an unknown
architecture), which `search` reports as a usage error naming the flag.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from .cli import bare_message
from .config import DEFAULT_FLUX_MODEL, LoraSpec
from .errors import InvalidParameter, ModelNotFound

DEFAULT_FLUX_BASE = DEFAULT_FLUX_MODEL
# Download sizes users ask about before a first run (hub file listings, rounded).
KNOWN_SIZES = {
    "black-forest-labs/FLUX.1-schnell": "about 34 GB",
    "black-forest-labs/FLUX.1-dev": "about 34 GB",
}
OPEN_CLIP_SIZES = {"ViT-L-14/openai": "about 1.7 GB", "ViT-B-32/openai": "about 0.6 GB"}   # fp32 safetensors
GATED = {"black-forest-labs/FLUX.1-dev"}
OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass
class Finding:
    status: str                     # "ok" | "warn" | "fail"
    detail: str
    fix: str = ""
    invalid: bool = False           # the parameter itself is wrong (search: exit 2 naming the flag)

    def raise_if_invalid(self, flag: str) -> None:
        if self.status == "fail" and self.invalid:
            raise InvalidParameter(flag, self.detail + (f"; {self.fix}" if self.fix else ""))


def ok(detail: str) -> Finding:
    return Finding("ok", detail)


def warn(detail: str, fix: str = "") -> Finding:
    return Finding("warn", detail, fix)


def fail(detail: str, fix: str = "", invalid: bool = False) -> Finding:
    return Finding("fail", detail, fix, invalid)


def looks_like_hub_id(spec: str) -> bool:
    """The loader's own rule (a name it would not treat as a path), so that doctor, search and the loader agree."""
    from .diffusers_flux import looks_like_path

    return not looks_like_path(spec)


def hub_offline() -> bool:
    """huggingface_hub's own reading of HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE), which the loaders obey."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def hub_cached(repo_id: str, filenames: Iterable[str]) -> Optional[str]:
    """Path of the first of `filenames` present in the Hugging Face cache for `repo_id`, else None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _hub_finding(repo_id: str, what: str, filenames: Sequence[str], size: str = "") -> Finding:
    cached = hub_cached(repo_id, filenames)
    if cached:
        return ok(f"{what} {repo_id} (in the Hugging Face cache)")
    size_note = f" ({size})" if size else ""
    if hub_offline():
        return fail(f"{what} {repo_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set",
                    f"download it on a machine with network (`huggingface-cli download {repo_id}`) or unset "
                    "HF_HUB_OFFLINE")
    fix = f"the first run downloads it{size_note}"
    if repo_id in GATED:
        fix += "; it is gated: accept its license on huggingface.co and run `huggingface-cli login` first"
    return warn(f"{what} {repo_id}: not in the Hugging Face cache yet", fix)


# ---------------------------------------------------------------------------------------------------------------
# Flux


def inspect_flux(spec: Optional[str], base: Optional[str] = None) -> Finding:
    spec = (spec or "").strip()
    if not spec:
        return fail("no Flux model given", "pass --flux or set FLUX_MODEL", invalid=True)
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "model_index.json")):
            return ok(f"local diffusers folder {os.path.abspath(path)}")
        return fail(f"{path} has no model_index.json, so it is not a diffusers pipeline folder",
                    "give a folder saved with FluxPipeline.save_pretrained (or downloaded from the hub), or a "
                    "single-file .safetensors transformer", invalid=True)
    if os.path.isfile(path):
        from .diffusers_flux import SINGLE_FILE_SUFFIXES

        if not path.lower().endswith(SINGLE_FILE_SUFFIXES):
            return fail(f"{path} is not a Flux transformer file ({', '.join(SINGLE_FILE_SUFFIXES)})",
                        "give a diffusers folder, a hub id, or a single-file .safetensors Flux transformer",
                        invalid=True)
        base_finding = inspect_flux_base(base or DEFAULT_FLUX_BASE)
        base_finding.detail = (f"single-file transformer {os.path.abspath(path)}; other parts: "
                               + base_finding.detail)
        return base_finding
    if looks_like_hub_id(spec):
        return _hub_finding(spec, "hub id", ("model_index.json",), KNOWN_SIZES.get(spec, "several GB"))
    return fail(f"{spec} not found (neither a file, a folder, nor a hub id like black-forest-labs/FLUX.1-schnell)",
                "check the path", invalid=True)


def inspect_flux_base(base: str) -> Finding:
    """The components (VAE, text encoders, scheduler) a single-file transformer borrows."""
    path = os.path.expanduser(base)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "model_index.json")):
            return ok(f"diffusers folder {os.path.abspath(path)}")
        return fail(f"{path} has no model_index.json", "give a diffusers Flux pipeline folder or hub id",
                    invalid=True)
    if looks_like_hub_id(base):
        return _hub_finding(base, "hub id", ("model_index.json",), "several GB")
    return fail(f"{base} not found", "give a diffusers Flux pipeline folder or hub id", invalid=True)


def check_flux(spec: Optional[str], base: Optional[str], flag: str = "flux") -> None:
    if base:
        if not (spec and os.path.isfile(os.path.expanduser(spec))):
            raise InvalidParameter("flux_base", "only applies when --flux is a single-file .safetensors transformer")
        inspect_flux_base(base).raise_if_invalid("flux_base")
    inspect_flux(spec, base).raise_if_invalid(flag)


# ---------------------------------------------------------------------------------------------------------------
# LoRAs, CLIP, aesthetic head, device


def inspect_loras(loras: Sequence[LoraSpec]) -> Finding:
    """Each file found the way the generator will look for it, and holding Flux (not SD/SDXL) keys."""
    if not loras:
        return ok("none")
    from .flux_loras import check_lora_keys, default_lora_dirs, resolve_lora_file

    found = []
    for lora in loras:
        try:
            file = resolve_lora_file(lora.path, default_lora_dirs())
            check_lora_keys(file)
        except ModelNotFound as exc:
            return fail(str(exc), invalid=True)
        found.append(f"{file} x{lora.weight:g}" + (f" (trigger {lora.trigger!r})" if lora.trigger else ""))
    return ok(", ".join(found))


def check_loras(loras: Sequence[LoraSpec], flag: str = "lora") -> None:
    inspect_loras(loras).raise_if_invalid(flag)


def inspect_clip(spec: Optional[str]) -> Finding:
    from .clip_loading import parse_clip_id

    spec = (spec or "").strip()
    # parse_clip_id's local-dir: rule, repeated so that a local folder is checked without importing open_clip
    # (seconds); every other id goes through parse_clip_id itself.
    if spec.startswith("local-dir:"):
        folder = os.path.abspath(os.path.expanduser(spec[len("local-dir:"):]))
        if not os.path.isfile(os.path.join(folder, "open_clip_config.json")):
            return fail(f"{spec}: {os.path.join(folder, 'open_clip_config.json')} not found (a local-dir: folder "
                        "holds open_clip_config.json and open_clip_model.safetensors)", invalid=True)
        return ok(f"local folder {folder}")
    try:
        name, tag = parse_clip_id(spec)          # the scorer's own check: same rules, same messages
    except InvalidParameter as exc:
        return fail(bare_message(exc), invalid=True)
    if name.startswith("hf-hub:"):
        return _hub_finding(name[len("hf-hub:"):].strip("/"), "open_clip hub model", ("open_clip_config.json",),
                            "several hundred MB")
    if tag and os.path.isfile(tag):
        return ok(f"open_clip {name} with weights file {os.path.abspath(tag)}")
    return _open_clip_cached(name, tag)


def _open_clip_cached(arch: str, tag: str) -> Finding:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    name = f"{arch}/{tag}"
    hub = (cfg.get("hf_hub") or "").strip()
    if hub:
        repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        files = (filename,) if filename else OPEN_CLIP_WEIGHT_FILES
        return _hub_finding(repo, f"open_clip {name} from", files, OPEN_CLIP_SIZES.get(name, "up to a few GB"))
    url = cfg.get("url") or ""
    if url and os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))):
        return ok(f"open_clip {name} (in ~/.cache/clip)")
    return warn(f"open_clip {name}: not downloaded yet", "the first run downloads it")


def check_clip(spec: Optional[str], flag: str = "clip") -> None:
    inspect_clip(spec).raise_if_invalid(flag)


def inspect_aesthetic(spec: Optional[str]) -> Finding:
    from . import aesthetic

    name = (spec or "").strip()
    if aesthetic.is_v25(name):
        try:
            import aesthetic_predictor_v2_5  # noqa: F401
        except ImportError:
            return fail("aesthetic-predictor-v2.5 is not installed", "pip install aesthetic-predictor-v2-5",
                        invalid=True)
        return ok("aesthetic-predictor-v2.5 (SigLIP)")
    try:
        path = aesthetic.resolve_aesthetic_path(name, allow_download=False)
        return ok(path)
    except ModelNotFound as exc:
        if name.lower() in aesthetic.LAION_NAMES or os.path.basename(name) == aesthetic.LAION_FILENAME:
            target = os.path.join(aesthetic.default_aesthetic_dir(), aesthetic.LAION_FILENAME)
            return warn(f"LAION head not downloaded yet ({target})",
                        f"the first run downloads it (3.7 MB) from {aesthetic.LAION_URL}")
        return fail(str(exc), invalid=True)


def check_aesthetic(spec: Optional[str], flag: str = "aesthetic") -> None:
    inspect_aesthetic(spec).raise_if_invalid(flag)


def check_head_fits_clip(aesthetic_spec: Optional[str], clip_spec: Optional[str], flag: str = "aesthetic") -> None:
    """A LAION-style head reads one CLIP's embedding width: refuse a mismatch before loading either."""
    from . import aesthetic
    from .clip_loading import configured_embed_dim

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
        raise InvalidParameter(flag, bare_message(exc)) from None


def _local_dir_embed_dim(clip_spec: str) -> Optional[int]:
    import json

    path = os.path.join(os.path.expanduser(clip_spec[len("local-dir:"):]), "open_clip_config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            width = json.load(handle).get("model_cfg", {}).get("embed_dim")
    except (OSError, ValueError, AttributeError) as exc:
        raise InvalidParameter("clip", f"{path} is not a readable open_clip config ({exc})") from None
    return width if isinstance(width, int) else None


def check_out_dir(out: str, flag: str = "out") -> None:
    """The run root must be (or become) a writable folder: find the nearest existing ancestor and ask it."""
    path = os.path.abspath(os.path.expanduser(out))
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise InvalidParameter(flag, f"{out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InvalidParameter(flag, f"{out}: no permission to write in {probe}")


def check_device(spec: Optional[str], flag: str = "device") -> Optional[str]:
    """None/auto -> None (the backends pick CUDA, then MPS, then CPU); else a device torch accepts and has."""
    if spec is None or spec.strip().lower() in ("", "auto"):
        return None
    import torch

    try:
        device = torch.device(spec.strip())
    except (RuntimeError, ValueError):
        raise InvalidParameter(flag, f"{spec!r} is not a device; use cuda, cuda:N, mps or cpu") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidParameter(flag, f"{spec}: CUDA is not available (torch {torch.__version__}); use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidParameter(flag, f"{spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InvalidParameter(flag, f"{spec}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise InvalidParameter(flag, f"{spec!r}: use cuda, cuda:N, mps or cpu")
    return str(device)


def check_true_cfg(scale: Optional[float], use_negative: bool, flag: str = "true_cfg") -> None:
    """--true-cfg: the generator's own rule (a finite number >= 1), and only useful with negative prompts."""
    if scale is None:
        return
    from .diffusers_flux import check_true_cfg_scale

    try:
        check_true_cfg_scale(scale)
    except InvalidParameter as exc:
        raise InvalidParameter(flag, bare_message(exc)) from None
    if scale > 1 and not use_negative:
        raise InvalidParameter(flag, "weights the negative prompt against the prompt, so it needs --negative (the "
                                     "LLM then writes a negative prompt per candidate)")
