"""The seed's environment variables, read in one place. Node inputs and CLI flags override these defaults."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping, Optional

from .errors import InvalidParameter

DEFAULT_OLLAMA_URL = "http://localhost:11434"
DEFAULT_OLLAMA_MODEL = "qwen2.5:7b-instruct"
DEFAULT_FLUX_MODEL = "black-forest-labs/FLUX.1-schnell"
DEFAULT_FLUX_API_URL = "http://localhost:8001"
DEFAULT_VISION_API_URL = "http://localhost:8002"
DEFAULT_CLIP_MODEL = "ViT-L-14/openai"
# The Ollama build of the original system's judge (Qwen2.5-VL-7B); it takes two images a request.
DEFAULT_VLM_MODEL = "qwen2.5vl:7b"


@dataclass(frozen=True)
class LoraSpec:
    path: str
    trigger: str = ""
    weight: float = 1.0

    @classmethod
    def from_dict(cls, data: Mapping) -> "LoraSpec":
        if not isinstance(data, Mapping) or "path" not in data or not str(data["path"]).strip():
            raise InvalidParameter("FLUX_LORAS", f"each LoRA needs a 'path', got {data!r}")
        try:
            weight = float(data.get("weight", 1.0))
        except (TypeError, ValueError):
            raise InvalidParameter("FLUX_LORAS", f"weight must be a number, got {dict(data)}") from None
        return cls(path=str(data["path"]), trigger=str(data.get("trigger") or ""), weight=weight)

    @classmethod
    def parse_cli(cls, text: str) -> "LoraSpec":
        """`PATH[:WEIGHT[:TRIGGER]]`; a Windows drive letter (C:\\...) stays part of the path."""
        drive, rest = "", text
        if len(text) > 2 and text[1] == ":" and text[0].isalpha() and text[2] in "\\/":
            drive, rest = text[:2], text[2:]
        parts = rest.split(":", 2)
        path = drive + parts[0]
        if not parts[0]:
            raise InvalidParameter("--lora", f"expected PATH[:WEIGHT[:TRIGGER]], got {text!r}")
        weight = 1.0
        if len(parts) > 1 and parts[1] != "":
            try:
                weight = float(parts[1])
            except ValueError:
                raise InvalidParameter("--lora", f"weight must be a number in {text!r}") from None
        trigger = parts[2] if len(parts) > 2 else ""
        return cls(path=path, trigger=trigger, weight=weight)


def parse_loras_json(text: Optional[str]) -> list[LoraSpec]:
    """FLUX_LORAS: JSON `[{"path", "trigger", "weight"}]` (empty or unset -> no LoRAs)."""
    if not text or not text.strip():
        return []
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidParameter("FLUX_LORAS", f"is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(items, list):
        raise InvalidParameter("FLUX_LORAS", "must be a JSON list of {path, trigger, weight} objects")
    return [LoraSpec.from_dict(item) for item in items]


@dataclass(frozen=True)
class Settings:
    llm_provider: str = "ollama"
    image_provider: str = "flux"
    vision_provider: str = "local"
    ollama_base_url: str = DEFAULT_OLLAMA_URL
    ollama_model: str = DEFAULT_OLLAMA_MODEL
    flux_api_url: str = DEFAULT_FLUX_API_URL
    flux_model: str = DEFAULT_FLUX_MODEL
    flux_loras: tuple = field(default_factory=tuple)
    vision_api_url: str = DEFAULT_VISION_API_URL
    clip_model: str = DEFAULT_CLIP_MODEL
    aesthetic_model: Optional[str] = None
    vlm_model: str = DEFAULT_VLM_MODEL

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "Settings":
        env = os.environ if env is None else env

        def get(name: str, default):
            value = env.get(name)
            return value if value not in (None, "") else default

        settings = cls(
            llm_provider=get("LLM_PROVIDER", "ollama"),
            image_provider=get("IMAGE_PROVIDER", "flux"),
            vision_provider=get("VISION_PROVIDER", "local"),
            ollama_base_url=get("OLLAMA_BASE_URL", DEFAULT_OLLAMA_URL),
            ollama_model=get("OLLAMA_MODEL", DEFAULT_OLLAMA_MODEL),
            flux_api_url=get("FLUX_API_URL", DEFAULT_FLUX_API_URL),
            flux_model=get("FLUX_MODEL", DEFAULT_FLUX_MODEL),
            flux_loras=tuple(parse_loras_json(env.get("FLUX_LORAS"))),
            vision_api_url=get("LOCAL_VISION_API_URL", DEFAULT_VISION_API_URL),
            clip_model=get("CLIP_MODEL", DEFAULT_CLIP_MODEL),
            aesthetic_model=get("AESTHETIC_MODEL", None),
            vlm_model=get("VLM_MODEL", DEFAULT_VLM_MODEL),
        )
        for name, value, allowed in (("LLM_PROVIDER", settings.llm_provider, ("ollama",)),
                                     ("IMAGE_PROVIDER", settings.image_provider, ("flux",)),
                                     ("VISION_PROVIDER", settings.vision_provider, ("local",))):
            if value not in allowed:
                raise InvalidParameter(name, f"{value!r} is not supported here (supported: {', '.join(allowed)})")
        return settings
