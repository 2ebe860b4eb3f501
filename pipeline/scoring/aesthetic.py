"""Aesthetic predictors: LAION's improved-aesthetic-predictor head (reads the CLIP image embedding the scorer
already computed) and, optionally, aesthetic-predictor-v2.5 (SigLIP, reads the images itself).

The LAION head is an MLP 768 -> 1024 -> 128 -> 64 -> 16 -> 1 over the L2-normalised CLIP ViT-L/14 image embedding,
stored as a plain state dict with keys `layers.{0,2,4,6,7}.{weight,bias}` (the dropouts sit at 1, 3 and 5).
Its output is a rating on the AVA scale, about 1..10.
"""
from __future__ import annotations

import hashlib
import os
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from ..errors import InvalidParameter, ModelNotFound

LAION_FILENAME = "sac+logos+ava1-l14-linearMSE.pth"
LAION_URL = ("https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
             "sac+logos+ava1-l14-linearMSE.pth")
# sha256 and size of that exact file, as pinned by several independent public projects that download it.
LAION_SHA256 = "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0"
LAION_BYTES = 3_714_759

V25_NAMES = ("v2.5", "v2_5", "aesthetic-predictor-v2.5", "aesthetic-predictor-v2-5", "aesthetic_predictor_v2_5",
             "siglip-v2.5")
LAION_NAMES = ("", "laion", "default", "v2")

# Image-embedding width of the common open_clip towers: how an error says which CLIP a head was trained on.
CLIP_FOR_WIDTH = {512: "ViT-B-32 / ViT-B-16", 768: "ViT-L-14", 1024: "ViT-H-14", 1280: "ViT-bigG-14"}
_HIDDEN = (1024, 128, 64, 16, 1)           # output widths of layers 0, 2, 4, 6, 7
_LINEAR_KEYS = (0, 2, 4, 6, 7)


def clip_name_for_width(width: int) -> str:
    return CLIP_FOR_WIDTH.get(width, "an unknown CLIP model")


class LaionAestheticHead(nn.Module):
    """LAION improved-aesthetic-predictor; the layer layout matches the original checkpoints key for key."""

    kind = "laion"
    reads = "embedding"

    def __init__(self, input_dim: int = 768):
        super().__init__()
        self.input_dim = input_dim
        self.layers = nn.Sequential(
            nn.Linear(input_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[B, D] L2-normalised image embeddings -> [B] ratings."""
        return self.layers(embeddings).squeeze(-1)


def read_state_dict(path: str) -> dict:
    """Tensors from a .safetensors or torch file, unwrapped from a {"state_dict"|"model": ...} container."""
    if path.endswith((".safetensors", ".sft")):
        from safetensors.torch import load_file
        try:
            return load_file(path, device="cpu")
        except Exception as exc:
            raise ModelNotFound(f"aesthetic checkpoint {path} is not a readable safetensors file ({exc})") from None
    with open(path, "rb") as handle:
        head = handle.read(256).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        # A browser "Save as" of the GitHub page instead of the raw file is the usual way to get this.
        raise ModelNotFound(f"aesthetic checkpoint {path} is an HTML page, not weights: download it again from "
                            f"the raw URL {LAION_URL}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelNotFound(f"aesthetic checkpoint {path} could not be read as a torch file ({exc})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict):
        raise ModelNotFound(f"aesthetic checkpoint {path} holds a {type(data).__name__}, not a state dict")
    return _strip_prefix(data)


def _strip_prefix(state: dict) -> dict:
    """Keys saved from a wrapper module ("module.layers.0.weight", "model.layers.0.weight") -> "layers.0.weight"."""
    if any(key.startswith("layers.") for key in state):
        return state
    for prefix in ("module.", "model.", "mlp.", "head."):
        stripped = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        if any(key.startswith("layers.") for key in stripped):
            return stripped
    return state


def laion_input_dim(state: dict, path: str) -> int:
    """Check the LAION key layout and hidden widths; return the embedding width the head reads."""
    expected = [f"layers.{i}.{part}" for i in _LINEAR_KEYS for part in ("weight", "bias")]
    missing = [key for key in expected if key not in state]
    if missing:
        found = ", ".join(sorted(state)[:8]) or "nothing"
        raise ModelNotFound(
            f"aesthetic checkpoint {path} is not a LAION improved-aesthetic-predictor head: missing "
            f"{', '.join(missing[:4])} (found {found})")
    first = state["layers.0.weight"]
    if first.dim() != 2:
        raise ModelNotFound(f"aesthetic checkpoint {path}: layers.0.weight has shape {list(first.shape)}, "
                            "expected [1024, embedding width]")
    input_dim = int(first.shape[1])
    widths = (input_dim,) + _HIDDEN
    for n, (index, out_dim) in enumerate(zip(_LINEAR_KEYS, _HIDDEN)):
        shape = list(state[f"layers.{index}.weight"].shape)
        if shape != [out_dim, widths[n]]:
            raise ModelNotFound(
                f"aesthetic checkpoint {path}: layers.{index}.weight has shape {shape}, expected "
                f"{[out_dim, widths[n]]} (LAION layout {input_dim}->1024->128->64->16->1)")
    return input_dim


def load_laion_head(path: str) -> LaionAestheticHead:
    state = read_state_dict(path)
    head = LaionAestheticHead(laion_input_dim(state, path))
    head.load_state_dict({key: value.float() for key, value in state.items() if key.startswith("layers.")})
    return head.eval().requires_grad_(False)


def check_head_fits(head_dim: int, clip_dim: int, clip_model: str, path: str) -> None:
    if head_dim != clip_dim:
        raise InvalidParameter(
            "aesthetic_model",
            f"{os.path.basename(path)} expects {head_dim}-d embeddings ({clip_name_for_width(head_dim)}); the CLIP "
            f"model {clip_model} gives {clip_dim}-d embeddings ({clip_name_for_width(clip_dim)}). Use a CLIP model "
            f"with {head_dim}-d embeddings, or a head trained on this CLIP (for ViT-L-14: {LAION_FILENAME})")


# ---------------------------------------------------------------------------------------------------------------
# Finding and fetching the checkpoint


def default_aesthetic_dir() -> str:
    """Where standalone runs keep aesthetic heads: $PROMPTBEAM_MODELS_DIR/aesthetic, else a per-user cache."""
    root = os.environ.get("PROMPTBEAM_MODELS_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "promptbeam",
                                                                     "models")
    return os.path.join(root, "aesthetic")


def is_v25(spec: Optional[str]) -> bool:
    return (spec or "").strip().lower() in V25_NAMES


def resolve_aesthetic_path(spec: Optional[str], search_dirs: Sequence[str] = (), allow_download: bool = True,
                           url: str = LAION_URL, sha256: Optional[str] = LAION_SHA256) -> str:
    """A file path for `spec`: a path, a file name inside `search_dirs`, or empty/"laion" for LAION's default head.

    LAION's default head is downloaded once into the first search folder when it is missing (sha256 verified).
    """
    dirs = [d for d in search_dirs if d] or [default_aesthetic_dir()]
    name = (spec or "").strip()
    if name.lower() in LAION_NAMES:
        name = LAION_FILENAME
    has_folder = os.path.dirname(os.path.expanduser(name)) != ""
    # A bare file name is looked up in the model folders; a path is taken as given (and also tried inside them,
    # for ComfyUI-style "subfolder/name.pth").
    candidates = [os.path.expanduser(name)] if has_folder else []
    candidates += [os.path.join(d, name) for d in dirs]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    if os.path.basename(name) == LAION_FILENAME and allow_download:
        return download_checkpoint(url, candidates[0], sha256=sha256)
    raise ModelNotFound(
        f"aesthetic checkpoint not found: {os.path.abspath(candidates[0])}. Put the file in "
        f"{_folders(dirs)} (ComfyUI: models/aesthetic) or give its full path; LAION's ViT-L-14 head "
        f"{LAION_FILENAME} is at {LAION_URL}")


def _folders(dirs: Iterable[str]) -> str:
    return " or ".join(os.path.abspath(d) for d in dirs)


def download_checkpoint(url: str, target: str, sha256: Optional[str] = None, timeout: float = 60.0) -> str:
    """Download `url` to `target` through a temporary file; keep it only if its sha256 matches.

    Without a known sha256 the computed one is stored beside the file (`target.sha256`) so a later change is
    visible.
    """
    import requests

    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    partial = target + ".part"
    digest = hashlib.sha256()
    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            with open(partial, "wb") as handle:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    digest.update(chunk)
                    handle.write(chunk)
    except (requests.RequestException, OSError) as exc:
        _remove(partial)
        raise ModelNotFound(
            f"aesthetic checkpoint {target} is missing and could not be downloaded from {url} ({exc}). "
            f"Download it yourself and put it in {folder}") from None
    actual = digest.hexdigest()
    if sha256 and actual != sha256.lower():
        _remove(partial)
        raise ModelNotFound(
            f"the file downloaded from {url} has sha256 {actual}, expected {sha256}; it was not saved. "
            f"Download it yourself and put it at {target}")
    os.replace(partial, target)
    if not sha256:
        with open(target + ".sha256", "w", encoding="utf-8") as handle:
            handle.write(f"{actual}  {os.path.basename(target)}\n")
    return os.path.abspath(target)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------------------------------------------
# aesthetic-predictor-v2.5 (optional)


class SiglipV25Predictor:
    """aesthetic-predictor-v2.5 (SigLIP). Scale about 1..10; its authors call 5.5+ great."""

    kind = "v2.5"
    reads = "images"

    def __init__(self, device: torch.device, dtype: torch.dtype):
        try:
            from aesthetic_predictor_v2_5 import convert_v2_5_from_siglip
        except ImportError:
            raise ModelNotFound("aesthetic_model 'v2.5' needs the aesthetic_predictor_v2_5 package: "
                                "pip install aesthetic-predictor-v2-5") from None
        model, self.processor = convert_v2_5_from_siglip(low_cpu_mem_usage=True, trust_remote_code=True)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device, self.dtype = device, dtype

    def to(self, device: torch.device) -> "SiglipV25Predictor":
        self.model.to(device)
        self.device = torch.device(device)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """[B, H, W, 3] in [0, 1] -> [B] ratings."""
        from ..images import tensor_to_pil
        pixels = self.processor(images=[tensor_to_pil(image) for image in images], return_tensors="pt").pixel_values
        with torch.inference_mode():
            logits = self.model(pixels.to(self.device, self.dtype)).logits
        return logits.reshape(len(images)).float()
