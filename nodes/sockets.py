"""The pack's socket types, and the dropdown input every Prompt Beam node uses instead of io.Combo.Input."""
from comfy_api.v0_0_2 import io

# The objects that travel between Prompt Beam nodes (CONTRACTS.md: custom socket types).
LLM = io.Custom("PROMPTBEAM_LLM")               # a PromptEngine (Ollama)
LORAS = io.Custom("PROMPTBEAM_LORAS")           # a tuple of LoraSpec
GENERATOR = io.Custom("PROMPTBEAM_GENERATOR")   # a Generator (ComfyUI's sampler, the Flux service, workers)
SCORER = io.Custom("PROMPTBEAM_SCORER")         # a Scorer (CLIP + aesthetic, local or the vision service)
JUDGE = io.Custom("PROMPTBEAM_JUDGE")           # a PairwiseJudge (an Ollama vision model, both orders)

SEED_MAX = 0xFFFFFFFFFFFFFFFF


class Choice(io.Combo.Input):
    """A dropdown whose value ComfyUI checks when a prompt is queued, as it did for the V1 nodes.

    ComfyUI (0.3.48 to 0.3.64 at least) checks a dropdown value against its list only when the input's type is the
    list itself (execution.py, validate_inputs: `isinstance(input_type, list)`). io.Combo.Input declares the type
    "COMBO" instead, so a mistyped value in an API prompt would pass validation and fail later inside the node.
    Declaring the values as the type keeps ComfyUI's "Value not in list" error naming the input, and /object_info
    lists the input exactly as before (saved workflows and the editor see no difference).
    """

    def get_io_type(self):
        return list(self.options)

    def as_dict(self):
        # The values are the type already; the V1 listing carried no second copy of them.
        return {key: value for key, value in super().as_dict().items() if key not in ("options", "multiselect")}
