"""Remote nodes: render with the Flux service and score with the vision service (this pack's
`python -m pipeline.services.flux` / `.vision`, on this machine or another), instead of ComfyUI's own models.

Their outputs are the same PROMPTBEAM_GENERATOR / PROMPTBEAM_SCORER sockets as the local nodes', so they plug into
Prompt Beam Search, Generate and Score unchanged. Each node checks its service with GET /health when it runs, so a
service that is down fails the node at once with the URL and how to start it, before any search work.
"""
from __future__ import annotations

import os

from comfy_api.v0_0_2 import io

from ..pipeline.config import DEFAULT_FLUX_API_URL, DEFAULT_VISION_API_URL
from ..pipeline.errors import InvalidParameter
from ..pipeline.generation import GenerationRequest
from ..pipeline.generation.remote_flux import RemoteFluxClient
from ..pipeline.scoring.remote import RemoteScorer
from .sockets import GENERATOR, LORAS, SCORER, Choice

CATEGORY = "Prompt Beam/remote"
MAX_RESOLUTION = 4096            # the Flux service's own limit
SCHEDULES = ["simple", "normal", "karras", "exponential", "beta"]   # the service maps what it lacks (beta -> simple)
TRANSFERS = ["f32", "png", "path"]


class PromptBeamRemoteFlux(io.ComfyNode):
    """The Flux service's address + image settings -> a PROMPTBEAM_GENERATOR that renders there."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PromptBeamRemoteFlux",
            display_name="Prompt Beam Remote Flux",
            category=CATEGORY,
            description="A Prompt Beam generator that renders with the Flux HTTP service (its model, on its GPU).",
            inputs=[
                io.String.Input("url", default=os.environ.get("FLUX_API_URL") or DEFAULT_FLUX_API_URL,
                                tooltip="The Flux service (python -m pipeline.services.flux)."),
                io.Int.Input("width", default=1024, min=16, max=MAX_RESOLUTION, step=16),
                io.Int.Input("height", default=1024, min=16, max=MAX_RESOLUTION, step=16),
                io.Int.Input("steps", default=4, min=1, max=200, tooltip="4 for Flux schnell, 20-30 for Flux dev."),
                io.Float.Input("guidance", default=3.5, min=0.0, max=100.0, step=0.1,
                               tooltip="Flux guidance; schnell ignores it."),
                Choice("scheduler", options=SCHEDULES, default="simple",
                       tooltip="Sigma schedule; one the service lacks is replaced and said in the metadata."),
                LORAS.Input("loras", optional=True, tooltip="Sent with every image. The service reads LoRAs only "
                                                            "inside its --lora-dir folders."),
                io.Boolean.Input("use_service_loras", default=True, optional=True, tooltip=(
                    "Without loras: use the service's default LoRAs (its --lora) or render without any.")),
                io.Float.Input("timeout", default=900.0, min=1.0, max=86400.0, step=1.0, optional=True,
                               tooltip="Seconds to wait for one image."),
                Choice("transfer", options=TRANSFERS, default="f32", optional=True, tooltip=(
                    "How the image comes back: f32 = exact tensor, png = 8-bit, path = read the service's file "
                    "(same machine only).")),
            ],
            outputs=[GENERATOR.Output(display_name="generator")],
        )

    @classmethod
    def execute(cls, url, width, height, steps, guidance, scheduler, loras=None, use_service_loras=True,
                timeout=900.0, transfer="f32"):
        if transfer not in TRANSFERS:
            raise InvalidParameter("transfer", f"{transfer!r} is not one of {', '.join(TRANSFERS)}")
        defaults = GenerationRequest(prompt="defaults", seed=0, width=width, height=height, steps=steps,
                                     guidance=guidance, sampler="euler", scheduler=scheduler)
        client = RemoteFluxClient((url or "").strip(), timeout=timeout, loras=tuple(loras or ()),
                                  use_service_loras=use_service_loras, defaults=defaults, transfer=transfer)
        client.health()
        return io.NodeOutput(client)


class PromptBeamRemoteScorer(io.ComfyNode):
    """The vision service's address -> a PROMPTBEAM_SCORER that scores there."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PromptBeamRemoteScorer",
            display_name="Prompt Beam Remote Scorer",
            category=CATEGORY,
            description="A Prompt Beam scorer that scores with the vision HTTP service (CLIP alignment + aesthetic, "
                        "the same numbers as the Scorer Loader with the same models).",
            inputs=[
                io.String.Input("url", default=os.environ.get("LOCAL_VISION_API_URL") or DEFAULT_VISION_API_URL,
                                tooltip="The vision service (python -m pipeline.services.vision)."),
                io.Float.Input("timeout", default=120.0, min=1.0, max=86400.0, step=1.0, optional=True,
                               tooltip="Seconds to wait for one batch of scores."),
            ],
            outputs=[SCORER.Output(display_name="scorer")],
        )

    @classmethod
    def execute(cls, url, timeout=120.0):
        scorer = RemoteScorer((url or "").strip(), timeout=timeout)
        scorer.health()
        return io.NodeOutput(scorer)


NODES = [PromptBeamRemoteFlux, PromptBeamRemoteScorer]
