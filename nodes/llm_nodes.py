"""ComfyUI nodes for the Ollama side: a connection node and one node per prompt operation.

Model names are STRING inputs, never dropdowns: a workflow queued through the API must not fail validation
because this machine's Ollama has other models. Creating the connection contacts no server (graphs validate and
cache offline); the first operation that needs Ollama reports an unreachable server or a missing model.
"""
import json
import logging

from comfy_api.v0_0_2 import io

from ..pipeline.config import DEFAULT_OLLAMA_MODEL, DEFAULT_OLLAMA_URL, DEFAULT_VLM_MODEL, Settings
from ..pipeline.errors import InvalidParameter, PromptBeamError
from ..pipeline.llm.client import DEFAULT_KEEP_ALIVE, DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, OllamaClient
from ..pipeline.llm.operations import DEFAULT_TEMPERATURES, MAX_EXPAND, PromptEngine
from ..pipeline.llm.templates import DIMENSIONS, STYLES
from .sockets import LLM, SEED_MAX, Choice

log = logging.getLogger(__name__)
CATEGORY = "Prompt Beam/LLM"


def ollama_defaults(vision: bool = False):
    """OLLAMA_BASE_URL and OLLAMA_MODEL (VLM_MODEL with vision=True), or the built-in defaults if the environment
    is unusable."""
    try:
        settings = Settings.from_env()
        return settings.ollama_base_url, settings.vlm_model if vision else settings.ollama_model
    except PromptBeamError as exc:   # a bad unrelated variable must not stop the node list from loading
        log.warning("Prompt Beam: ignoring environment for node defaults: %s", exc)
        return DEFAULT_OLLAMA_URL, DEFAULT_VLM_MODEL if vision else DEFAULT_OLLAMA_MODEL


def _seed_input(tooltip, optional=False):
    return io.Int.Input("seed", default=0, min=0, max=SEED_MAX, tooltip=tooltip, optional=optional)


def _dimension_input():
    return Choice("dimension", options=list(DIMENSIONS), default="what",
                  tooltip="what = content of the picture, how = its look")


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


class PromptBeamOllama(io.ComfyNode):
    """Connection settings for a local Ollama server -> a PROMPTBEAM_LLM (no request is made here)."""

    @classmethod
    def define_schema(cls):
        base_url, model = ollama_defaults()
        temps = ", ".join(f"{op} {t}" for op, t in DEFAULT_TEMPERATURES.items())
        return io.Schema(
            node_id="PromptBeamOllama",
            display_name="Prompt Beam Ollama",
            category=CATEGORY,
            description="Ollama connection for the Prompt Beam prompt operations. Nothing is contacted until "
                        "first use.",
            inputs=[
                io.String.Input("base_url", default=base_url, tooltip="Ollama server address (OLLAMA_BASE_URL)"),
                io.String.Input("model", default=model, tooltip="an installed model, see `ollama list` "
                                                                "(OLLAMA_MODEL)"),
                io.Float.Input("temperature", default=-1.0, min=-1.0, max=2.0, step=0.05,
                               tooltip=f"-1 = per-operation defaults ({temps}); otherwise one temperature for "
                                       "every operation"),
                _seed_input("default Ollama seed for operations that do not pass their own"),
                io.String.Input("keep_alive", default=DEFAULT_KEEP_ALIVE,
                                tooltip="how long Ollama keeps the model loaded: '5m', '1h', '0' (unload after "
                                        "each call), '-1' (forever)"),
                io.Int.Input("timeout", default=int(DEFAULT_TIMEOUT_S), min=5, max=3600, optional=True,
                             tooltip="seconds to wait for one answer"),
                io.Boolean.Input("low_vram", default=False, optional=True,
                                 tooltip="unload the model as soon as the LLM work is done, so Flux gets the VRAM"),
                io.Int.Input("retries", default=DEFAULT_RETRIES, min=0, max=10, optional=True,
                             tooltip="extra attempts on connection errors and server errors"),
                io.Float.Input("top_p", default=0.0, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="0 = the model's default"),
                io.Int.Input("top_k", default=0, min=0, max=1000, optional=True, tooltip="0 = the model's default"),
                io.Int.Input("num_ctx", default=0, min=0, max=131072, optional=True,
                             tooltip="context length in tokens; 0 = the model's default"),
                Choice("on_bad_output", options=["fallback", "error"], default="fallback", optional=True,
                       tooltip="when the model's answer stays unusable after a retry: use a rule-based value, or "
                               "fail"),
            ],
            outputs=[LLM.Output(display_name="llm")],
        )

    @classmethod
    def execute(cls, base_url, model, temperature, seed, keep_alive, timeout=int(DEFAULT_TIMEOUT_S), low_vram=False,
                retries=DEFAULT_RETRIES, top_p=0.0, top_k=0, num_ctx=0, on_bad_output="fallback"):
        if on_bad_output not in ("fallback", "error"):
            raise InvalidParameter("on_bad_output", f"must be 'fallback' or 'error', got {on_bad_output!r}")
        client = OllamaClient(base_url, model, timeout=timeout, retries=retries, keep_alive=keep_alive)
        engine = PromptEngine(client, temperature=None if temperature < 0 else temperature, seed=seed,
                              top_p=top_p or None, top_k=top_k or None, num_ctx=num_ctx or None,
                              allow_fallback=on_bad_output == "fallback", low_vram=low_vram)
        return io.NodeOutput(engine)


class PromptBeamExpand(io.ComfyNode):
    """User prompt -> N distinct WHAT (content) or HOW (style) variants, from one LLM call."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PromptBeamExpand",
            display_name="Prompt Beam Expand",
            category=CATEGORY,
            description="Expand a prompt into distinct WHAT (what is in the picture) or HOW (how it looks) variants.",
            inputs=[
                LLM.Input("llm"),
                io.String.Input("prompt", multiline=True, default="", tooltip="the user's prompt"),
                _dimension_input(),
                io.Int.Input("variants", default=4, min=1, max=MAX_EXPAND),
                _seed_input("Ollama seed for this call"),
            ],
            outputs=[io.String.Output(display_name="variants", is_output_list=True)],
        )

    @classmethod
    def execute(cls, llm, prompt, dimension, variants, seed):
        llm = _engine(llm)
        result = llm.expand(prompt, dimension, variants, seed=seed)
        return io.NodeOutput(list(_finish(llm, "expand", result)))


class PromptBeamRefine(io.ComfyNode):
    """One half + a critique -> an improved half."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PromptBeamRefine",
            display_name="Prompt Beam Refine",
            category=CATEGORY,
            description="Improve the WHAT or HOW half of a prompt following a critique and the history of earlier "
                        "edits.",
            inputs=[
                LLM.Input("llm"),
                io.String.Input("prompt", multiline=True, default="", tooltip="the current WHAT or HOW text"),
                _dimension_input(),
                io.String.Input("critique", multiline=True, default="",
                                tooltip="a Critique node's JSON, or plain text"),
                io.String.Input("user_prompt", multiline=True, default="", tooltip="the original request"),
                _seed_input("Ollama seed for this call"),
                io.String.Input("history", multiline=True, default="", optional=True,
                                tooltip="JSON list of earlier edits: {dimension, before, after, score_before, "
                                        "score_after}"),
            ],
            outputs=[io.String.Output(display_name="prompt")],
        )

    @classmethod
    def execute(cls, llm, prompt, dimension, critique, user_prompt, seed, history=""):
        llm = _engine(llm)
        result = llm.refine(prompt, dimension, parse_critique(critique), user_prompt,
                            history=parse_history(history), seed=seed)
        return io.NodeOutput(_finish(llm, "refine", result))


class PromptBeamCombine(io.ComfyNode):
    """WHAT + HOW -> the prompt Flux renders (LLM merge, or a deterministic template)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PromptBeamCombine",
            display_name="Prompt Beam Combine",
            category=CATEGORY,
            description="Merge the WHAT and HOW halves into one prompt.",
            inputs=[
                LLM.Input("llm"),
                io.String.Input("what", multiline=True, default=""),
                io.String.Input("how", multiline=True, default=""),
                io.Int.Input("descriptiveness", default=2, min=1, max=3,
                             tooltip="1 concise, 2 balanced, 3 descriptive"),
                Choice("style", options=list(STYLES), default="natural",
                       tooltip="natural sentences (Flux) or tag hybrid (anime models)"),
                _seed_input("Ollama seed for this call"),
                Choice("mode", options=["llm", "template"], default="llm", optional=True,
                       tooltip="template = 'WHAT. HOW.' without calling the LLM"),
            ],
            outputs=[io.String.Output(display_name="prompt")],
        )

    @classmethod
    def execute(cls, llm, what, how, descriptiveness, style, seed, mode="llm"):
        llm = _engine(llm)
        if mode == "template":
            return io.NodeOutput(llm.combine_template(what, how, style))
        if mode != "llm":
            raise InvalidParameter("mode", f"must be 'llm' or 'template', got {mode!r}")
        result = llm.combine(what, how, descriptiveness=descriptiveness, style=style, seed=seed)
        return io.NodeOutput(_finish(llm, "combine", result))


class PromptBeamCritique(io.ComfyNode):
    """Scores of a rendered candidate -> JSON {critique, recommendation, reason} for the next edit."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PromptBeamCritique",
            display_name="Prompt Beam Critique",
            category=CATEGORY,
            description="Critique one half of a prompt from its image's scores; severity follows the scores.",
            inputs=[
                LLM.Input("llm"),
                io.String.Input("user_prompt", multiline=True, default=""),
                io.String.Input("prompt", multiline=True, default="", tooltip="the combined prompt rendered"),
                io.String.Input("scores", multiline=True, default="",
                                tooltip="JSON {alignment, aesthetic} or a Score node's list"),
                _dimension_input(),
                io.String.Input("what", multiline=True, default="", optional=True),
                io.String.Input("how", multiline=True, default="", optional=True),
                io.String.Input("caption", multiline=True, default="", optional=True,
                                tooltip="what the image shows, if known"),
                io.Int.Input("index", default=0, min=0, max=4096, optional=True,
                             tooltip="which image, when scores is a list"),
                _seed_input("Ollama seed for this call", optional=True),
            ],
            outputs=[io.String.Output(display_name="critique")],
        )

    @classmethod
    def execute(cls, llm, user_prompt, prompt, scores, dimension, what="", how="", caption="", index=0, seed=0):
        llm = _engine(llm)
        result = llm.critique(user_prompt, what or prompt, how or prompt, prompt, parse_scores(scores, index),
                              dimension, caption=caption or None, seed=seed)
        return io.NodeOutput(json.dumps(_finish(llm, "critique", result), ensure_ascii=False))


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


NODES = [PromptBeamOllama, PromptBeamExpand, PromptBeamRefine, PromptBeamCombine, PromptBeamCritique]
