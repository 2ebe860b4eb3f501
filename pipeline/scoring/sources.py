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
from ..sources import FAIL, OK, WARN, ModelSource, fail, hub_source, ok, warn
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


# ---- the scorers named by --scorer (specs.py) ----------------------------------------------------------------------

def resolve_scorer(spec, hps_arch: Optional[str] = None, clip: Optional[str] = None,
                   aesthetic_model: Optional[str] = None) -> ModelSource:
    """One scorer spec (`clip`, `pickscore[=SOURCE]`, `hpsv2[=FILE]`, text or ScorerSpec): the verdict `search`,
    `doctor`, the scorer node and the vision service all give. `clip` is the CLIP model and aesthetic head."""
    from .specs import ScorerSpec, parse_scorer_spec

    try:
        spec = spec if isinstance(spec, ScorerSpec) else parse_scorer_spec(spec)
    except InvalidParameter as exc:
        return fail(InvalidParameter.bare(exc), invalid=True, error=exc)
    if spec.name == "pickscore":
        return resolve_pickscore(spec.source)
    if spec.name == "hpsv2":
        arch = resolve_hps_arch(hps_arch)
        return arch if arch.status == FAIL else resolve_hpsv2(spec.source)
    found = resolve_clip(clip)
    if found.status == FAIL:
        return found
    head = resolve_aesthetic(aesthetic_model)
    if head.status == FAIL:
        return head
    return ModelSource(WARN if WARN in (found.status, head.status) else OK, f"{found.detail} + aesthetic {head.detail}",
                       "; ".join(filter(None, (found.fix, head.fix))), form="clip", location=found.location)


def resolve_pickscore(source: Optional[str]) -> ModelSource:
    """form "hub" | "folder". A folder in the published layout (config.json, weights, and the processor files when
    it has them; otherwise the processor comes from LAION's ViT-H/14 repository, which must then be reachable)."""
    from . import pickscore

    source = (source or "").strip() or pickscore.DEFAULT_MODEL
    folder = os.path.expanduser(source)
    if os.path.isdir(folder):
        folder = os.path.abspath(folder)
        problem = _pickscore_folder_problem(folder)
        if problem:
            return fail(f"PickScore folder {folder}: {problem}", "give a folder saved in the published layout "
                        "(config.json + model.safetensors; e.g. `huggingface-cli download yuvalkirstain/PickScore_v1 "
                        "--local-dir DIR`)", invalid=True)
        model = ok(f"PickScore folder {folder}", form="folder", location=folder)
    elif os.path.exists(folder) or not _is_hub_id(source):
        what = "is not a folder" if os.path.exists(folder) else "not found"
        return fail(f"PickScore source {source} {what}", "give a folder in the published layout or a hub id such "
                    f"as {pickscore.DEFAULT_MODEL}", invalid=True)
    else:
        model = hub_source(source, "PickScore model", ("config.json",), "about 4 GB")
    processor = pickscore.processor_location(model.location or folder)
    if model.status == FAIL or processor == model.location:
        return model
    found = hub_source(processor, "its processor", ("preprocessor_config.json",), "a few MB")
    if found.status == FAIL:
        return fail(f"{model.detail}; {found.detail}", found.fix)
    status = WARN if WARN in (model.status, found.status) else OK
    return ModelSource(status, f"{model.detail}, processor from {processor}",
                       "; ".join(filter(None, (model.fix, found.fix))), form=model.form, location=model.location)


def _pickscore_folder_problem(folder: str) -> Optional[str]:
    from .pickscore import WEIGHT_FILES

    config = os.path.join(folder, "config.json")
    try:
        with open(config, encoding="utf-8") as handle:
            kind = json.load(handle).get("model_type")
    except FileNotFoundError:
        return "no config.json"
    except (OSError, ValueError, AttributeError) as exc:
        return f"config.json is not readable JSON ({exc})"
    if kind != "clip":
        return f"config.json describes a {kind!r} model, not a CLIP model"
    if not any(os.path.isfile(os.path.join(folder, name)) for name in WEIGHT_FILES):
        return f"no weights ({' or '.join(WEIGHT_FILES[:2])})"
    return None


def _is_hub_id(text: str) -> bool:
    """ORG/REPO, as the hub names repositories (anything else that is not on disk is a path that is missing)."""
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def resolve_hpsv2(weights: Optional[str]) -> ModelSource:
    """form "file" | "hub": the HPS state-dict file, or the published HPS_v2.1_compressed.pt from the hub cache."""
    from .hps import HPS_FILE, HPS_REPO

    if not (weights or "").strip():
        return hub_source(HPS_REPO, f"HPSv2.1 weights {HPS_FILE} from", (HPS_FILE,), "about 2 GB")
    path = os.path.abspath(os.path.expanduser(weights.strip()))
    if os.path.isdir(path):
        return fail(f"HPS weights {path} is a folder", f"give the state-dict file itself ({HPS_FILE})", invalid=True)
    if not os.path.isfile(path):
        return fail(f"HPS weights {path} not found", f"download {HPS_FILE} from the hub repository {HPS_REPO} and "
                                                     "give its path", invalid=True)
    return ok(f"HPSv2 weights {path}", form="file", location=path)


def resolve_hps_arch(arch: Optional[str]) -> ModelSource:
    """The open_clip architecture the HPS weights are loaded into: a built-in name (ViT-H-14 by default) or a
    `local-dir:` folder with open_clip_config.json (its weights, if any, are not used)."""
    from .hps import DEFAULT_ARCH

    arch = (arch or "").strip() or DEFAULT_ARCH
    if arch.startswith("local-dir:"):
        config = os.path.join(os.path.abspath(os.path.expanduser(arch[len("local-dir:"):])), "open_clip_config.json")
        try:
            with open(config, encoding="utf-8") as handle:
                model_cfg = json.load(handle).get("model_cfg")
        except (OSError, ValueError, AttributeError) as exc:
            return fail(f"{arch}: {config} is not a readable open_clip config ({exc})",
                        "a local-dir: architecture is a folder with open_clip_config.json", invalid=True)
        if not isinstance(model_cfg, dict):
            return fail(f"{arch}: {config} has no model_cfg", "write open_clip's {\"model_cfg\": {...}} layout",
                        invalid=True)
        return ok(f"open_clip architecture from {config}", form="local-dir", location=arch)
    import open_clip

    known = open_clip.list_models()
    if arch not in known:
        import difflib

        close = difflib.get_close_matches(arch, known, n=3)
        return fail(f"unknown open_clip architecture {arch!r}" + (f" (did you mean {', '.join(close)}?)" if close
                                                                   else ""),
                    f"HPSv2.1 is {DEFAULT_ARCH}; other names come from open_clip.list_models()", invalid=True)
    return ok(f"open_clip architecture {arch}", form="pretrained", location=arch)


def check_scorers(texts, hps_arch: Optional[str] = None, flag: str = "scorer", arch_flag: str = "hps_arch",
                  models: bool = True) -> tuple:
    """The scorer specs of a command, checked before anything loads: each parses (InvalidParameter naming `flag`),
    --hps-arch only with hpsv2, and (with `models`) each reward model's verdict refuses what can never work. The
    `clip` scorer's models are --clip and --aesthetic, checked by their own flags."""
    from .specs import parse_scorer_specs

    specs = parse_scorer_specs(texts, flag)
    names = [spec.name for spec in specs]
    if (hps_arch or "").strip():
        if "hpsv2" not in names:
            raise InvalidParameter(arch_flag, "sets the architecture of the hpsv2 scorer; no hpsv2 scorer is named")
        resolve_hps_arch(hps_arch).raise_if_invalid(arch_flag)
    if models:
        for spec in specs:
            if spec.name != "clip":
                resolve_scorer(spec, hps_arch=hps_arch).raise_if_invalid(flag)
    return specs
