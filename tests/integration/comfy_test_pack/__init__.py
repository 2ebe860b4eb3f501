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


class PromptBeamTestGenerateMany:
    """generator.generate() on several requests at once (one prompt per line, seeds seed, seed+1, ...) with the
    generator's max_batch set, as the beam search calls it; the images come out as one IMAGE batch."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"generator": ("PROMPTBEAM_GENERATOR",), "prompts": ("STRING", {"multiline": True}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
                             "max_batch": ("INT", {"default": 4, "min": 1, "max": 16}),
                             "expect_batches": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"
    CATEGORY = "Prompt Beam/testing"

    def generate(self, generator, prompts, seed, max_batch, expect_batches=""):
        import torch

        generator.max_batch = max_batch
        sizes, render_batch = [], generator._render_batch

        def counted(requests, *args):
            sizes.append(len(requests))
            return render_batch(requests, *args)
        generator._render_batch = counted
        try:
            lines = [line.strip() for line in prompts.splitlines() if line.strip()]
            results = generator.generate([generator.request(text, seed + i) for i, text in enumerate(lines)])
        finally:
            del generator._render_batch
        # The test states the batches it expects: a graph that rendered otherwise fails instead of passing.
        if expect_batches and ",".join(map(str, sizes)) != expect_batches:
            raise RuntimeError(f"rendered in batches {sizes}, expected {expect_batches}")
        return (torch.stack([r.image for r in results]),)


def _add_routes():
    """POST /promptbeam_test/unload_models: what ComfyUI's memory management does when another model needs the
    memory (comfy.model_management.unload_all_models), answered with how many models were loaded before and after.
    Tests call it while a search waits for its LLM, between two rounds."""
    from aiohttp import web
    import comfy.model_management as model_management
    from server import PromptServer

    @PromptServer.instance.routes.post("/promptbeam_test/unload_models")
    async def unload_models(request):
        before = len(model_management.current_loaded_models)
        model_management.unload_all_models()
        model_management.soft_empty_cache()
        return web.json_response({"loaded_before": before,
                                  "loaded_after": len(model_management.current_loaded_models)})


_add_routes()

NODE_CLASS_MAPPINGS = {"PromptBeamTestTinyFlux": PromptBeamTestTinyFlux,
                       "PromptBeamTestGenerateMany": PromptBeamTestGenerateMany}
NODE_DISPLAY_NAME_MAPPINGS = {"PromptBeamTestTinyFlux": "Prompt Beam Test: Tiny Flux",
                              "PromptBeamTestGenerateMany": "Prompt Beam Test: Generate Many"}
