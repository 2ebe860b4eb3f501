"""The LLM part: an Ollama HTTP client (`client`), the prompt operations a search asks of it (`operations`:
expand, refine, combine, critique, negative, as `PromptEngine`; `rounds`: the per-round requests a search makes,
round 0's pairs and each parent's critique with its children in one answer; `vision`: what a vision model says of
images, a critic's evaluation of one and a pairwise judge's verdict on two), the text clean-up and argument checks
they share (`text`), their templates and JSON schemas (`templates`), and the reader of an answer that is still
streaming in (`jsonstream`).

May import: pipeline.config, pipeline.errors. Nothing above it (no generation, scoring, beam, record, cli).

    from pipeline.llm import OllamaClient, PromptEngine
    engine = PromptEngine(OllamaClient("http://localhost:11434", "qwen2.5:7b-instruct"))
"""
from .. import lazy_exports

_EXPORTS = {name: ".client" for name in (
    "OllamaClient", "OllamaError", "OllamaUnreachable", "OllamaTimeout", "OllamaModelNotFound", "OllamaBadOutput",
    "ChatStats", "ChatResponse")}
_EXPORTS.update({name: ".operations" for name in ("PromptEngine", "OpResult", "DEFAULT_TEMPERATURES")})
_EXPORTS.update({name: ".vision" for name in ("PairwiseJudge", "require_vision", "vision_support")})
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
