"""Remote nodes: render with the Flux service and score with the vision service (this pack's
`python -m pipeline.services.flux` / `.vision`, on this machine or another), instead of ComfyUI's own models.

Their outputs are the same PROMPTBEAM_GENERATOR / PROMPTBEAM_SCORER sockets as the local nodes', so they plug into
Prompt Beam Search, Generate and Score unchanged. Each node checks its service with GET /health when it runs, so a
service that is down fails the node at once with the URL and how to start it, before any search work.
"""
from __future__ import annotations

import os

from ..pipeline.config import DEFAULT_FLUX_API_URL, DEFAULT_VISION_API_URL
from ..pipeline.errors import InvalidParameter
from ..pipeline.generation import GenerationRequest
from ..pipeline.generation.remote_flux import RemoteFluxClient
from ..pipeline.scoring.remote import RemoteScorer

CATEGORY = "Prompt Beam/remote"
MAX_RESOLUTION = 4096            # the Flux service's own limit
SCHEDULES = ["simple", "normal", "karras", "exponential", "beta"]   # the service maps what it lacks (beta -> simple)
TRANSFERS = ["f32", "png", "path"]


class PromptBeamRemoteFlux:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "url": ("STRING", {"default": os.environ.get("FLUX_API_URL") or DEFAULT_FLUX_API_URL,
                                   "tooltip": "The Flux service (python -m pipeline.services.flux)."}),
                "width": ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 16}),
                "height": ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 16}),
                "steps": ("INT", {"default": 4, "min": 1, "max": 200,
                                  "tooltip": "4 for Flux schnell, 20-30 for Flux dev."}),
                "guidance": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1,
                                       "tooltip": "Flux guidance; schnell ignores it."}),
                "scheduler": (SCHEDULES, {"default": "simple", "tooltip": "Sigma schedule; one the service lacks "
                                                                          "is replaced and said in the metadata."}),
            },
            "optional": {
                "loras": ("PROMPTBEAM_LORAS", {"tooltip": "Sent with every image. The service reads LoRAs only "
                                                          "inside its --lora-dir folders."}),
                "use_service_loras": ("BOOLEAN", {"default": True, "tooltip": (
                    "Without loras: use the service's default LoRAs (its --lora) or render without any.")}),
                "timeout": ("FLOAT", {"default": 900.0, "min": 1.0, "max": 86400.0, "step": 1.0,
                                      "tooltip": "Seconds to wait for one image."}),
                "transfer": (TRANSFERS, {"default": "f32", "tooltip": (
                    "How the image comes back: f32 = exact tensor, png = 8-bit, path = read the service's file "
                    "(same machine only).")}),
            },
        }

    RETURN_TYPES = ("PROMPTBEAM_GENERATOR",)
    RETURN_NAMES = ("generator",)
    FUNCTION = "connect"
    CATEGORY = CATEGORY
    DESCRIPTION = "A Prompt Beam generator that renders with the Flux HTTP service (its model, on its GPU)."

    def connect(self, url, width, height, steps, guidance, scheduler, loras=None, use_service_loras=True,
                timeout=900.0, transfer="f32"):
        if transfer not in TRANSFERS:
            raise InvalidParameter("transfer", f"{transfer!r} is not one of {', '.join(TRANSFERS)}")
        defaults = GenerationRequest(prompt="defaults", seed=0, width=width, height=height, steps=steps,
                                     guidance=guidance, sampler="euler", scheduler=scheduler)
        client = RemoteFluxClient((url or "").strip(), timeout=timeout, loras=tuple(loras or ()),
                                  use_service_loras=use_service_loras, defaults=defaults, transfer=transfer)
        client.health()
        return (client,)


class PromptBeamRemoteScorer:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "url": ("STRING", {"default": os.environ.get("LOCAL_VISION_API_URL") or DEFAULT_VISION_API_URL,
                                   "tooltip": "The vision service (python -m pipeline.services.vision)."}),
            },
            "optional": {
                "timeout": ("FLOAT", {"default": 120.0, "min": 1.0, "max": 86400.0, "step": 1.0,
                                      "tooltip": "Seconds to wait for one batch of scores."}),
            },
        }

    RETURN_TYPES = ("PROMPTBEAM_SCORER",)
    RETURN_NAMES = ("scorer",)
    FUNCTION = "connect"
    CATEGORY = CATEGORY
    DESCRIPTION = ("A Prompt Beam scorer that scores with the vision HTTP service (CLIP alignment + aesthetic, "
                   "the same numbers as the Scorer Loader with the same models).")

    def connect(self, url, timeout=120.0):
        scorer = RemoteScorer((url or "").strip(), timeout=timeout)
        scorer.health()
        return (scorer,)


NODE_CLASS_MAPPINGS = {
    "PromptBeamRemoteFlux": PromptBeamRemoteFlux,
    "PromptBeamRemoteScorer": PromptBeamRemoteScorer,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PromptBeamRemoteFlux": "Prompt Beam Remote Flux",
    "PromptBeamRemoteScorer": "Prompt Beam Remote Scorer",
}
