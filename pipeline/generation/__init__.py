"""The generation part: `GenerationRequest` / `GenerationResult` and the `Generator` protocol every backend
implements (`protocol`), where a Flux model or LoRA comes from (`sources`, `loras`), the diffusers Flux backend
(`diffusers_flux`), the client of the seed's Flux service (`remote_flux`) and a pool of ComfyUI servers that
render through their API queue (`comfy_workers`). ComfyUI's own sampler backend is
`nodes/comfy_generator.py` (it imports ComfyUI, so it lives with the nodes).

May import: pipeline.config, pipeline.errors, pipeline.images, pipeline.sources, pipeline.comfy_api,
pipeline.services.protocol (the wire format the Flux service's client speaks).

    from pipeline.generation import DiffusersFluxGenerator, GenerationRequest
"""
from .. import lazy_exports

_EXPORTS = {name: ".protocol" for name in (
    "GenerationRequest", "GenerationResult", "Generator", "StepCallback", "StopCheck", "plan_batches",
    "with_triggers")}
_EXPORTS.update({"DiffusersFluxGenerator": ".diffusers_flux", "RemoteFluxClient": ".remote_flux",
                 "ComfyWorkerPool": ".comfy_workers"})
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
