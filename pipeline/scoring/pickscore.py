"""PickScore v1 (Kirstain et al. 2023): a CLIP ViT-H/14 fine-tuned on Pick-a-Pic human preferences, loaded with
transformers' CLIPModel and its processor, as the authors' README does.

    score = logit_scale.exp() * cos(image_emb, text_emb)        about 18..24 for images that fit their prompt

One image's score, never the softmax over a batch (the README's "probabilities" only compare the images of one
call). Weights come from `yuvalkirstain/PickScore_v1` with the processor of `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`,
or from a local folder in the published layout (config.json + model.safetensors / pytorch_model.bin, and the
processor files when the folder has them).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..errors import ModelNotFound, ScoringFailed
from ..images import tensor_to_pil
from .clip import check_values, image_groups

DEFAULT_MODEL = "yuvalkirstain/PickScore_v1"
DEFAULT_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
# The image processor's config as the hub repositories store it, or as transformers 5 saves a whole processor.
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def has_processor(folder: str) -> bool:
    """True when `folder` holds an image processor config and a CLIP tokenizer (fast or BPE files)."""
    return any(os.path.isfile(os.path.join(folder, name)) for name in PROCESSOR_FILES) and any(
        all(os.path.isfile(os.path.join(folder, name)) for name in names) for names in TOKENIZER_FILES)


def processor_location(model_location: str) -> str:
    """Where the processor comes from: the model folder when it has one, else LAION's ViT-H/14 repository (the
    PickScore README's choice; the model repository's own config only describes the network)."""
    if os.path.isdir(model_location) and has_processor(model_location):
        return model_location
    return DEFAULT_PROCESSOR


def pooled(features) -> torch.Tensor:
    """The projected embedding from CLIPModel.get_image_features / get_text_features: a tensor on transformers 4,
    a BaseModelOutputWithPooling whose `pooler_output` holds it on transformers 5."""
    if isinstance(features, torch.Tensor):
        return features
    value = getattr(features, "pooler_output", None)
    if not isinstance(value, torch.Tensor):
        raise ScoringFailed(f"CLIPModel returned {type(features).__name__} without a pooler_output tensor; this "
                            "transformers version is not supported for PickScore")
    return value


class PickScoreModel:
    """One forward of the image tower and one of the text tower per `score` call, for the whole batch."""

    name = "pickscore"

    def __init__(self, model, image_processor, tokenizer, device: torch.device, dtype: torch.dtype,
                 source: str = DEFAULT_MODEL, processor_source: str = DEFAULT_PROCESSOR):
        self.model, self.image_processor, self.tokenizer = model, image_processor, tokenizer
        self.device, self.dtype = torch.device(device), dtype
        self.source, self.processor_source = source, processor_source
        # The text tower's positions: longer prompts are cut there, keeping the end-of-text token.
        self.context_length = int(model.config.text_config.max_position_embeddings)

    def score(self, images, texts: Union[str, Sequence[str]]) -> torch.Tensor:
        """[B] scores of `images` against one prompt or one prompt per image (already checked by the caller)."""
        pictures = []
        for group in image_groups(images):
            check_values(group, len(pictures))
            pictures += [tensor_to_pil(image) for image in group]
        prompts = [texts] if isinstance(texts, str) else list(texts)
        with torch.inference_mode():
            pixels = self.image_processor(images=pictures, return_tensors="pt")["pixel_values"]
            tokens = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.context_length,
                                              return_tensors="pt")
            image_emb = F.normalize(pooled(self.model.get_image_features(
                pixel_values=pixels.to(self.device, self.dtype))).float(), dim=-1)            # [B, D]
            text_emb = F.normalize(pooled(self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device))).float(), dim=-1)    # [1 or B, D]
            scores = self.model.logit_scale.exp().float() * (image_emb * text_emb).sum(dim=-1)
        return scores.cpu()

    def to(self, device: torch.device) -> "PickScoreModel":
        self.model.to(device)
        return self

    def describe(self) -> dict:
        return {"model": self.source, "processor": self.processor_source, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "context_length": self.context_length}


def load_pickscore(location: Optional[str], device: torch.device, dtype: torch.dtype) -> PickScoreModel:
    """PickScore from a hub id or a local folder (already resolved by sources.resolve_pickscore)."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    location = location or DEFAULT_MODEL
    processor_source = processor_location(location)
    try:
        model = CLIPModel.from_pretrained(location)
        # The two halves of the processor, read alike from a hub repository's preprocessor_config.json and from
        # the processor_config.json transformers 5 writes.
        image_processor = AutoImageProcessor.from_pretrained(processor_source)
        tokenizer = AutoTokenizer.from_pretrained(processor_source)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelNotFound(f"PickScore from {location} (processor {processor_source}) could not be loaded: "
                            f"{' '.join(str(exc).split())[:400]}") from None
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return PickScoreModel(model, image_processor, tokenizer, device, dtype, location, processor_source)
