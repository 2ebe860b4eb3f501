"""ComfyUI nodes for the Ollama side: a connection node and one node per prompt operation.

Model names are STRING inputs, never dropdowns: a workflow queued through the API must not fail validation
because this machine's Ollama has other models. Creating the connection contacts no server (graphs validate and
cache offline); the first operation that needs Ollama reports an unreachable server or a missing model.
"""
import json
import logging

from ..pipeline.config import DEFAULT_OLLAMA_MODEL, DEFAULT_OLLAMA_URL, Settings
from ..pipeline.errors import InvalidParameter, PromptBeamError
from ..pipeline.llm.client import DEFAULT_KEEP_ALIVE, DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, OllamaClient
from ..pipeline.llm.operations import DEFAULT_TEMPERATURES, MAX_EXPAND, PromptEngine
from ..pipeline.llm.templates import DIMENSIONS, STYLES

log = logging.getLogger(__name__)
CATEGORY = "Prompt Beam/LLM"
SEED_MAX = 0xFFFFFFFFFFFFFFFF
LLM_TYPE = "PROMPTBEAM_LLM"


def _ollama_defaults():
    """OLLAMA_BASE_URL / OLLAMA_MODEL, or the built-in defaults if the environment is unusable."""
    try:
        settings = Settings.from_env()
        return settings.ollama_base_url, settings.ollama_model
    except PromptBeamError as exc:   # a bad unrelated variable must not stop the node list from loading
        log.warning("Prompt Beam: ignoring environment for node defaults: %s", exc)
        return DEFAULT_OLLAMA_URL, DEFAULT_OLLAMA_MODEL


def _seed_input(tooltip):
    return ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "tooltip": tooltip})


def _dimension_input():
    return (list(DIMENSIONS), {"default": "what", "tooltip": "what = content of the picture, how = its look"})


def _engine(llm):
    """The PROMPTBEAM_LLM socket carries a PromptEngine; check by behaviour (the pack may be loaded twice)."""
    if not all(hasattr(llm, name) for name in ("expand", "refine", "combine", "critique", "client")):
        raise InvalidParameter("llm", f"expects the output of a Prompt Beam Ollama node, got {type(llm).__name__}")
    return llm


def _finish(llm, op, result):
    """Log a rule-based fallback and, in low-VRAM mode, give the GPU memory back to Flux as soon as the LLM work of
    this node is done. Returns the operation's value."""
    if result.fallback:
        log.warning("Prompt Beam: %s used the rule-based fallback (%s)", op, result.problem)
    if getattr(llm, "low_vram", False):
        llm.client.unload()
    return result.value


class PromptBeamOllama:
    """Connection settings for a local Ollama server -> a PROMPTBEAM_LLM (no request is made here)."""

    @classmethod
    def INPUT_TYPES(cls):
        base_url, model = _ollama_defaults()
        temps = ", ".join(f"{op} {t}" for op, t in DEFAULT_TEMPERATURES.items())
        return {
            "required": {
                "base_url": ("STRING", {"default": base_url, "tooltip": "Ollama server address (OLLAMA_BASE_URL)"}),
                "model": ("STRING", {"default": model, "tooltip": "an installed model, see `ollama list` "
                                                                  "(OLLAMA_MODEL)"}),
                "temperature": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 2.0, "step": 0.05,
                                          "tooltip": f"-1 = per-operation defaults ({temps}); otherwise one "
                                                     "temperature for every operation"}),
                "seed": _seed_input("default Ollama seed for operations that do not pass their own"),
                "keep_alive": ("STRING", {"default": DEFAULT_KEEP_ALIVE,
                                          "tooltip": "how long Ollama keeps the model loaded: '5m', '1h', "
                                                     "'0' (unload after each call), '-1' (forever)"}),
            },
            "optional": {
                "timeout": ("INT", {"default": int(DEFAULT_TIMEOUT_S), "min": 5, "max": 3600,
                                    "tooltip": "seconds to wait for one answer"}),
                "low_vram": ("BOOLEAN", {"default": False, "tooltip": "unload the model as soon as the LLM work "
                                                                      "is done, so Flux gets the VRAM"}),
                "retries": ("INT", {"default": DEFAULT_RETRIES, "min": 0, "max": 10,
                                    "tooltip": "extra attempts on connection errors and server errors"}),
                "top_p": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                    "tooltip": "0 = the model's default"}),
                "top_k": ("INT", {"default": 0, "min": 0, "max": 1000, "tooltip": "0 = the model's default"}),
                "num_ctx": ("INT", {"default": 0, "min": 0, "max": 131072, "tooltip": "context length in tokens; "
                                                                                     "0 = the model's default"}),
                "on_bad_output": (["fallback", "error"], {"default": "fallback",
                                                          "tooltip": "when the model's answer stays unusable after "
                                                                     "a retry: use a rule-based value, or fail"}),
            },
        }

    RETURN_TYPES = (LLM_TYPE,)
    RETURN_NAMES = ("llm",)
    FUNCTION = "create"
    CATEGORY = CATEGORY
    DESCRIPTION = "Ollama connection for the Prompt Beam prompt operations. Nothing is contacted until first use."

    def create(self, base_url, model, temperature, seed, keep_alive, timeout=int(DEFAULT_TIMEOUT_S),
               low_vram=False, retries=DEFAULT_RETRIES, top_p=0.0, top_k=0, num_ctx=0, on_bad_output="fallback"):
        if on_bad_output not in ("fallback", "error"):
            raise InvalidParameter("on_bad_output", f"must be 'fallback' or 'error', got {on_bad_output!r}")
        client = OllamaClient(base_url, model, timeout=timeout, retries=retries, keep_alive=keep_alive)
        engine = PromptEngine(client, temperature=None if temperature < 0 else temperature, seed=seed,
                              top_p=top_p or None, top_k=top_k or None, num_ctx=num_ctx or None,
                              allow_fallback=on_bad_output == "fallback", low_vram=low_vram)
        return (engine,)


class PromptBeamExpand:
    """User prompt -> N distinct WHAT (content) or HOW (style) variants, from one LLM call."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "llm": (LLM_TYPE,),
            "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "the user's prompt"}),
            "dimension": _dimension_input(),
            "variants": ("INT", {"default": 4, "min": 1, "max": MAX_EXPAND}),
            "seed": _seed_input("Ollama seed for this call"),
        }}

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("variants",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "expand"
    CATEGORY = CATEGORY
    DESCRIPTION = "Expand a prompt into distinct WHAT (what is in the picture) or HOW (how it looks) variants."

    def expand(self, llm, prompt, dimension, variants, seed):
        llm = _engine(llm)
        result = llm.expand(prompt, dimension, variants, seed=seed)
        return (list(_finish(llm, "expand", result)),)


class PromptBeamRefine:
    """One half + a critique -> an improved half."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "llm": (LLM_TYPE,),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "the current WHAT or HOW text"}),
                "dimension": _dimension_input(),
                "critique": ("STRING", {"multiline": True, "default": "",
                                        "tooltip": "a Critique node's JSON, or plain text"}),
                "user_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "the original request"}),
                "seed": _seed_input("Ollama seed for this call"),
            },
            "optional": {
                "history": ("STRING", {"multiline": True, "default": "",
                                       "tooltip": "JSON list of earlier edits: {dimension, before, after, "
                                                  "score_before, score_after}"}),
            },
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("prompt",)
    FUNCTION = "refine"
    CATEGORY = CATEGORY
    DESCRIPTION = "Improve the WHAT or HOW half of a prompt following a critique and the history of earlier edits."

    def refine(self, llm, prompt, dimension, critique, user_prompt, seed, history=""):
        llm = _engine(llm)
        result = llm.refine(prompt, dimension, parse_critique(critique), user_prompt,
                            history=parse_history(history), seed=seed)
        return (_finish(llm, "refine", result),)


class PromptBeamCombine:
    """WHAT + HOW -> the prompt Flux renders (LLM merge, or a deterministic template)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "llm": (LLM_TYPE,),
                "what": ("STRING", {"multiline": True, "default": ""}),
                "how": ("STRING", {"multiline": True, "default": ""}),
                "descriptiveness": ("INT", {"default": 2, "min": 1, "max": 3,
                                            "tooltip": "1 concise, 2 balanced, 3 descriptive"}),
                "style": (list(STYLES), {"default": "natural",
                                         "tooltip": "natural sentences (Flux) or tag hybrid (anime models)"}),
                "seed": _seed_input("Ollama seed for this call"),
            },
            "optional": {
                "mode": (["llm", "template"], {"default": "llm",
                                               "tooltip": "template = 'WHAT. HOW.' without calling the LLM"}),
            },
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("prompt",)
    FUNCTION = "combine"
    CATEGORY = CATEGORY
    DESCRIPTION = "Merge the WHAT and HOW halves into one prompt."

    def combine(self, llm, what, how, descriptiveness, style, seed, mode="llm"):
        llm = _engine(llm)
        if mode == "template":
            return (llm.combine_template(what, how, style),)
        if mode != "llm":
            raise InvalidParameter("mode", f"must be 'llm' or 'template', got {mode!r}")
        result = llm.combine(what, how, descriptiveness=descriptiveness, style=style, seed=seed)
        return (_finish(llm, "combine", result),)


class PromptBeamCritique:
    """Scores of a rendered candidate -> JSON {critique, recommendation, reason} for the next edit."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "llm": (LLM_TYPE,),
                "user_prompt": ("STRING", {"multiline": True, "default": ""}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "the combined prompt rendered"}),
                "scores": ("STRING", {"multiline": True, "default": "",
                                      "tooltip": "JSON {alignment, aesthetic} or a Score node's list"}),
                "dimension": _dimension_input(),
            },
            "optional": {
                "what": ("STRING", {"multiline": True, "default": ""}),
                "how": ("STRING", {"multiline": True, "default": ""}),
                "caption": ("STRING", {"multiline": True, "default": "", "tooltip": "what the image shows, "
                                                                                    "if known"}),
                "index": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip": "which image, when scores is "
                                                                                 "a list"}),
                "seed": _seed_input("Ollama seed for this call"),
            },
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("critique",)
    FUNCTION = "critique"
    CATEGORY = CATEGORY
    DESCRIPTION = "Critique one half of a prompt from its image's scores; severity follows the scores."

    def critique(self, llm, user_prompt, prompt, scores, dimension, what="", how="", caption="", index=0, seed=0):
        llm = _engine(llm)
        result = llm.critique(user_prompt, what or prompt, how or prompt, prompt, parse_scores(scores, index),
                              dimension, caption=caption or None, seed=seed)
        return (json.dumps(_finish(llm, "critique", result), ensure_ascii=False),)


# -- input parsing (STRING sockets carry JSON) ------------------------------------------------------------------------

def parse_critique(text):
    """A Critique node's JSON, or plain text taken as the critique itself."""
    text = (text or "").strip()
    if not text:
        raise InvalidParameter("critique", "is empty; connect a Critique node or type what should change")
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidParameter("critique", f"looks like JSON but does not parse ({exc.msg} at char "
                                               f"{exc.pos})") from None
        if not isinstance(data, dict) or not (data.get("critique") or data.get("recommendation")):
            raise InvalidParameter("critique", "JSON must have 'critique' and/or 'recommendation'")
        return data
    return text


def parse_history(text):
    text = (text or "").strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidParameter("history", f"is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise InvalidParameter("history", "must be a JSON list of {dimension, before, after, score_before, "
                                          "score_after} objects")
    return data


def parse_scores(text, index=0):
    """{alignment, aesthetic[, total]}, a list of those (pick `index`), or {"scores": [...]}."""
    try:
        data = json.loads(text or "")
    except json.JSONDecodeError as exc:
        raise InvalidParameter("scores", f"is not valid JSON ({exc.msg} at char {exc.pos}); expected e.g. "
                                         '{"alignment": 27.5, "aesthetic": 6.1}') from None
    if isinstance(data, dict) and isinstance(data.get("scores"), list):
        data = data["scores"]
    if isinstance(data, list):
        if not 0 <= index < len(data):
            raise InvalidParameter("index", f"{index} is out of range for {len(data)} scores")
        data = data[index]
    if not isinstance(data, dict):
        raise InvalidParameter("scores", 'must be a JSON object such as {"alignment": 27.5, "aesthetic": 6.1}')
    return data


NODE_CLASS_MAPPINGS = {
    "PromptBeamOllama": PromptBeamOllama,
    "PromptBeamExpand": PromptBeamExpand,
    "PromptBeamRefine": PromptBeamRefine,
    "PromptBeamCombine": PromptBeamCombine,
    "PromptBeamCritique": PromptBeamCritique,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PromptBeamOllama": "Prompt Beam Ollama",
    "PromptBeamExpand": "Prompt Beam Expand",
    "PromptBeamRefine": "Prompt Beam Refine",
    "PromptBeamCombine": "Prompt Beam Combine",
    "PromptBeamCritique": "Prompt Beam Critique",
}
