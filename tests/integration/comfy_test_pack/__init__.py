"""Test-only ComfyUI nodes for Prompt Beam's integration tests (never shipped with the pack)."""
from .tiny_flux import build_tiny_flux


class PromptBeamTestTinyFlux:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "build"
    CATEGORY = "Prompt Beam/testing"
    DESCRIPTION = "A tiny random-weight Flux MODEL (deterministic from its seed) for tests on CPU."

    def build(self, seed):
        return (build_tiny_flux(seed),)


NODE_CLASS_MAPPINGS = {"PromptBeamTestTinyFlux": PromptBeamTestTinyFlux}
NODE_DISPLAY_NAME_MAPPINGS = {"PromptBeamTestTinyFlux": "Prompt Beam Test: Tiny Flux"}
