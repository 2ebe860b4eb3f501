"""Image scoring: CLIP alignment + LAION aesthetic predictor from one CLIP forward pass.

    alignment = 100 * max(cos(image_emb, text_emb), 0)        CLIPScore convention, 0..100
    aesthetic = LAION head(L2-normalised image_emb)           same forward pass, about 1..10
    total     = alpha * alignment + (1 - alpha) * 10 * aesthetic

`load_scorer` goes from names to a ready `Scorer` (like open_clip's factory); `Scorer.score` scores a batch in one
CLIP forward; `Scorer.analyze` answers in the seed's vision-provider shape.
"""
from __future__ import annotations

import gc
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..config import DEFAULT_CLIP_MODEL
from ..errors import InvalidParameter, ScoringFailed
from ..images import png_base64
from .aesthetic import SiglipV25Predictor, check_head_fits, is_v25, load_laion_head, resolve_aesthetic_path
# CLIP loading and batch preprocessing live in clip.py; their public names stay importable from here.
from .clip import (_PRECISION, TensorPreprocess, check_values, configured_embed_dim, image_groups,  # noqa: F401
                   load_clip, parse_clip_id, resolve_device, resolve_dtype)
from .sources import resolve_clip
from .specs import combined_total

DEFAULT_ALPHA = 0.7
AFTER_USE = ("keep", "offload", "unload")


@dataclass
class ImageScore:
    alignment: float                   # 100 * max(cos(image, text), 0), 0..100
    aesthetic: float                   # LAION predictor, about 1..10
    caption: Optional[str] = None      # optional VLM caption/critique for the critique step
    named: dict = field(default_factory=dict)    # other scorers' scores by name: {"pickscore": 21.3, "hpsv2": 0.27}
    ranked_by: tuple = ()              # the scorers the total combines (specs.combined_total); () = the seed's total

    def total(self, alpha: float = DEFAULT_ALPHA) -> float:
        seed_total = total_score(self.alignment, self.aesthetic, alpha)
        if not self.ranked_by:
            return seed_total
        return combined_total({"clip": seed_total, **self.named}, self.ranked_by)

    def as_dict(self, alpha: float = DEFAULT_ALPHA) -> dict:
        return {"alignment": self.alignment, "aesthetic": self.aesthetic, **self.named, "total": self.total(alpha)}


def total_score(alignment: float, aesthetic: float, alpha: float = DEFAULT_ALPHA) -> float:
    """The seed formula: alpha * alignment + (1 - alpha) * 10 * aesthetic (both terms on a 0..100 scale)."""
    return alpha * alignment + (1.0 - alpha) * 10.0 * aesthetic


def _flat(groups: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [image for group in groups for image in group]


# ---------------------------------------------------------------------------------------------------------------
# The scorer


class Scorer:
    """CLIP + aesthetic predictor. One CLIP forward per `score` call scores the whole batch.

    `after_use` frees accelerator memory between calls, for machines where Flux and the scorer do not fit
    together: "keep" (stay loaded), "offload" (move to CPU, back on the next call) or "unload" (drop the weights,
    reload from disk on the next call).
    """

    def __init__(self, clip, tokenizer, preprocess, aesthetic, *, device: torch.device, dtype: torch.dtype,
                 clip_id: str = "custom", aesthetic_id: str = "custom", after_use: str = "keep",
                 caption_client=None, reload: Optional[Callable[[], tuple]] = None):
        self.clip, self.tokenizer, self.aesthetic = clip, tokenizer, aesthetic
        self.preprocess = TensorPreprocess(preprocess)
        self.device, self.dtype = torch.device(device), dtype
        self.clip_id, self.aesthetic_id = clip_id, aesthetic_id
        self.aesthetic_kind = getattr(aesthetic, "kind", "laion")
        self.after_use = after_use
        self.caption_client = caption_client
        self._reload = reload
        self._on_device = True
        self._text_cache: dict[str, torch.Tensor] = {}
        self._lock = threading.RLock()
        self.embed_dim = _embed_dim(clip)
        self.context_length = int(getattr(clip, "context_length", None) or getattr(tokenizer, "context_length", 77))

    @property
    def after_use(self) -> str:
        return self._after_use

    @after_use.setter
    def after_use(self, value: str) -> None:
        self._after_use = _check_after_use(value)

    def score(self, images, text: Union[str, Sequence[str]], captions: bool = False) -> list[ImageScore]:
        """Score images against `text` (one prompt for all, or one per image). Captions come from the vision LLM
        in `caption_client` when `captions` is true."""
        groups = image_groups(images)
        count = sum(len(group) for group in groups)
        texts = check_texts(text, count)
        if captions and self.caption_client is None:
            raise InvalidParameter("captions", "no vision LLM is configured for captions (caption_client)")
        with self._lock:
            self._ready()
            try:
                alignment, aesthetic = self._forward(groups, texts)
            finally:
                self.release(self.after_use)
        if not (torch.isfinite(alignment).all() and torch.isfinite(aesthetic).all()):
            raise ScoringFailed(f"the scorer produced non-finite scores in {_PRECISION[self.dtype]}; "
                                "try dtype fp32 or bf16")
        notes: list[Optional[str]] = [None] * count
        if captions:
            notes = caption_images(self.caption_client, _flat(groups), caption_prompt_for(texts[0]))
        return [ImageScore(alignment=float(a), aesthetic=float(s), caption=c)
                for a, s, c in zip(alignment.tolist(), aesthetic.tolist(), notes)]

    def analyze(self, image, prompt: str) -> dict:
        """The seed's vision-provider answer for one image: {alignmentScore, aestheticScore, analysis, strengths,
        weaknesses}."""
        return describe_score(self.score(image, prompt)[0], self.aesthetic_kind)

    def _forward(self, groups: list[torch.Tensor], texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            image_emb = self._image_embeddings(groups)                             # [B, D]
            text_emb = torch.stack([self._text_embedding(t) for t in texts])       # [1 or B, D]
            alignment = 100.0 * (image_emb * text_emb).sum(dim=-1).clamp(min=0.0)  # [B]
            if getattr(self.aesthetic, "reads", "embedding") == "embedding":
                aesthetic = self.aesthetic(image_emb)
            else:
                aesthetic = self.aesthetic(groups[0] if len(groups) == 1 else _flat(groups))
        return alignment.float().cpu(), aesthetic.float().cpu()

    def _image_embeddings(self, groups: list[torch.Tensor]) -> torch.Tensor:
        batches, offset = [], 0
        for group in groups:        # one group, or one per image when sizes differ: still one CLIP forward
            pixels = group.to(self.device)
            check_values(pixels, offset)
            offset += len(group)
            batches.append(self.preprocess(pixels.permute(0, 3, 1, 2)))
        pixels = batches[0] if len(batches) == 1 else torch.cat(batches)
        features = self.clip.encode_image(pixels.to(self.dtype)).float()
        return F.normalize(features, dim=-1)

    def _text_embedding(self, text: str) -> torch.Tensor:
        cached = self._text_cache.get(text)
        if cached is None:
            # The tokenizers truncate to the context (77 for CLIP) and keep the end-of-text token.
            tokens = self.tokenizer([text], context_length=self.context_length)[:, :self.context_length]
            cached = F.normalize(self.clip.encode_text(tokens.to(self.device)).float(), dim=-1)[0]
            if len(self._text_cache) >= 64:
                self._text_cache.pop(next(iter(self._text_cache)))
            self._text_cache[text] = cached
        return cached.to(self.device)

    # -- memory -----------------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self.clip is not None

    def load(self) -> None:
        """Bring the weights back onto the device now (they also come back by themselves on the next call)."""
        with self._lock:
            self._ready()

    def _ready(self) -> None:
        if self.clip is None:
            if self._reload is None:
                raise ScoringFailed("this scorer was unloaded and has no way to reload; load it again")
            clip, tokenizer, preprocess, aesthetic = self._reload()
            self.clip, self.tokenizer, self.aesthetic = clip, tokenizer, aesthetic
            self.preprocess = TensorPreprocess(preprocess)
            self._on_device = True
        elif not self._on_device:
            self._move(self.device)
            self._on_device = True

    def release(self, mode: str = "offload") -> None:
        """Free accelerator memory now: "offload" to CPU or "unload" the weights ("keep" does nothing)."""
        with self._lock:
            if mode == "unload" and self._reload is not None and self.clip is not None:
                self.clip = self.aesthetic = None
                self._text_cache.clear()
            elif (mode in ("offload", "unload") and self.device.type != "cpu" and self._on_device
                  and self.clip is not None):
                self._move(torch.device("cpu"))
                self._on_device = False
            else:
                return
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _move(self, device: torch.device) -> None:
        self.clip.to(device)
        if hasattr(self.aesthetic, "to"):
            self.aesthetic.to(device)
        self._text_cache = {text: emb.to(device) for text, emb in self._text_cache.items()}

    def describe(self) -> dict:
        return {"clip_model": self.clip_id, "aesthetic_model": self.aesthetic_id,
                "aesthetic_kind": self.aesthetic_kind, "device": str(self.device),
                "dtype": _PRECISION.get(self.dtype, str(self.dtype)), "embed_dim": self.embed_dim,
                "context_length": self.context_length, "after_use": self.after_use, "loaded": self.loaded,
                "captions": self.caption_client is not None}


def _embed_dim(clip) -> int:
    width = getattr(getattr(clip, "visual", None), "output_dim", None)
    if isinstance(width, int):
        return width
    return int(clip.text_projection.shape[-1])


def _check_after_use(value: str) -> str:
    if value not in AFTER_USE:
        raise InvalidParameter("after_use", f"{value!r} is not one of {', '.join(AFTER_USE)}")
    return value


def check_texts(text: Union[str, Sequence[str]], count: int) -> list[str]:
    """One prompt for all images or one per image, none empty -> the prompts, stripped."""
    texts = [text] if isinstance(text, str) else list(text or [])
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise InvalidParameter("text", "the prompt to score against is empty")
    if len(texts) not in (1, count):
        raise InvalidParameter("text", f"got {len(texts)} prompts for {count} images; give one, or one per image")
    return [t.strip() for t in texts]


def load_scorer(clip_model: str = DEFAULT_CLIP_MODEL, aesthetic_model: Optional[str] = None,
                device: Union[str, torch.device, None] = None, dtype: Union[str, torch.dtype, None] = None, *,
                aesthetic_dirs: Sequence[str] = (), allow_download: bool = True, after_use: str = "keep",
                caption_client=None) -> Scorer:
    """A ready Scorer from names. Every argument is checked before any weights load.

    aesthetic_model: None / "laion" (LAION's ViT-L-14 head, downloaded once into the first aesthetic folder when
    missing), a file name inside `aesthetic_dirs`, a path, or "v2.5" (needs `pip install aesthetic-predictor-v2-5`).
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    _check_after_use(after_use)
    clip_model = clip_model or DEFAULT_CLIP_MODEL
    resolve_clip(clip_model).require()        # the one rule for CLIP ids (and the hub cache when offline)
    declared_width = configured_embed_dim(clip_model)
    path = None if is_v25(aesthetic_model) else resolve_aesthetic_path(aesthetic_model, aesthetic_dirs,
                                                                       allow_download)
    head = None if path is None else load_laion_head(path)
    if head is not None and declared_width is not None:
        check_head_fits(head.input_dim, declared_width, clip_model, path)

    def build() -> tuple:
        nonlocal head
        if path is None:
            aesthetic = SiglipV25Predictor(device, dtype if device.type == "cuda" else torch.float32)
        else:
            # The head read for the check above serves the first build; a reload after "unload" reads the file
            # again, like the CLIP weights.
            aesthetic = head if head is not None else load_laion_head(path)
            head = None
        clip, tokenizer, preprocess = load_clip(clip_model, device, dtype)
        if path is not None:
            check_head_fits(aesthetic.input_dim, _embed_dim(clip), clip_model, path)
            aesthetic = aesthetic.to(device)
        return clip, tokenizer, preprocess, aesthetic

    return Scorer(*build(), device=device, dtype=dtype, clip_id=clip_model, aesthetic_id=path or "v2.5",
                  after_use=after_use, caption_client=caption_client, reload=build)


# ---------------------------------------------------------------------------------------------------------------
# Captions from an Ollama vision model (llava, qwen2.5vl, ...)

CAPTION_PROMPT = ("Describe this image in two or three plain sentences: what it shows, its style, and its most "
                  "visible flaw. No lists, no preamble.")


def caption_prompt_for(user_prompt: str) -> str:
    return (f"This image was generated for the prompt: \"{user_prompt.strip()}\". In two or three plain sentences, "
            "describe what the image actually shows and name the most visible way it misses the prompt or its most "
            "visible flaw. No lists, no preamble.")


def caption_images(client, images, prompt: str = CAPTION_PROMPT, max_side: int = 512) -> list[str]:
    """One caption per image from a vision chat model, through OllamaClient.chat (or anything with `.client`)."""
    chat = getattr(client, "chat", None) or getattr(getattr(client, "client", None), "chat", None)
    if chat is None:
        raise InvalidParameter("client", f"{type(client).__name__} has no chat(messages) method")
    captions = []
    for index, image in enumerate(_flat(image_groups(images))):
        message = {"role": "user", "content": prompt, "images": [png_base64(image, max_side)]}
        reply = chat([message], options={"temperature": 0.2})
        text = (reply.text or "").strip()
        if not text:
            raise ScoringFailed(f"the vision model returned an empty caption for image {index}")
        captions.append(text)
    return captions


# ---------------------------------------------------------------------------------------------------------------
# The seed's provider answer, by fixed rules on the scores

# CLIPScore bands (100 * cos). For CLIP ViT-L/14, an image that shows its prompt usually lands in the high 20s to
# 30s and an unrelated one in the teens; the bands are rules for wording, not measurements of this image.
ALIGNMENT_STRONG, ALIGNMENT_WEAK = 30.0, 20.0
AESTHETIC_BANDS = {"laion": (6.0, 5.0), "v2.5": (5.5, 4.0)}   # (high from, low below)


def _band(value: float, high: float, low: float, words: tuple[str, str, str], what: str, shown: str,
          scale: str = "") -> tuple[bool, str]:
    """(is a strength, the sentence) for `value` against the bands [high, inf), [low, high) and below low."""
    if value >= high:
        return True, f"{words[0]} {what} ({shown} >= {high:g}{scale})"
    if value >= low:
        return False, f"{words[1]} {what} ({shown}, between {low:g} and {high:g}{scale})"
    return False, f"{words[2]} {what} ({shown} < {low:g}{scale})"


def describe_score(score: ImageScore, aesthetic_kind: str = "laion") -> dict[str, Any]:
    """{alignmentScore, aestheticScore, analysis, strengths, weaknesses}: each sentence states a score and the rule
    that produced it; a caption, when present, is quoted as the vision model's words."""
    high, low = AESTHETIC_BANDS.get(aesthetic_kind, AESTHETIC_BANDS["laion"])
    align, aes = score.alignment, score.aesthetic
    rated = [_band(align, ALIGNMENT_STRONG, ALIGNMENT_WEAK, ("Strong", "Only moderate", "Weak"), "prompt alignment",
                   f"CLIPScore {align:.1f}"),
             _band(aes, high, low, ("High", "Only average", "Low"), "aesthetic score", f"{aes:.2f}",
                   f" on the {aesthetic_kind} predictor")]
    strengths = [sentence for strong, sentence in rated if strong]
    weaknesses = [sentence for strong, sentence in rated if not strong]
    analysis = (f"CLIP alignment {align:.1f}/100 and aesthetic {aes:.2f}/10 ({aesthetic_kind} predictor). "
                f"{len(strengths)} strength(s), {len(weaknesses)} weakness(es) by the score bands.")
    if score.caption:
        analysis += f" Vision model's description: {score.caption}"
    result = {
        # The seed's client rejects aesthetic scores outside 0..10; the unclamped value stays in aestheticRaw.
        "alignmentScore": round(align, 4), "aestheticScore": round(min(max(aes, 0.0), 10.0), 4),
        "aestheticRaw": round(aes, 4), "analysis": analysis, "strengths": strengths, "weaknesses": weaknesses,
    }
    if score.caption:
        result["caption"] = score.caption
    return result
