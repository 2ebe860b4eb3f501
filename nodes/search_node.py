"""PromptBeamSearch: the whole beam search in one node (LLM prompts -> Flux -> scores -> keep the best, repeat).

The node is an adapter: it builds a BeamConfig from its widgets, wires the search's callbacks to ComfyUI's
ProgressBar (with a preview of every finished candidate), progress text and interrupt flag, and writes the run
record under ComfyUI's output folder (output/promptbeam/<run_id>/).
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.v0_0_2 import io
from server import PromptServer

from ..pipeline.beam.search import BeamConfig, BeamSearch, SearchCallbacks
from ..pipeline.errors import Interrupted, InvalidParameter
from ..pipeline.images import tensor_to_pil
from ..pipeline.llm.vision import require_vision
from .judge_nodes import check_pairwise, judge_of
from .sockets import GENERATOR, JUDGE, LLM, SCORER, SEED_MAX, Choice

log = logging.getLogger(__name__)

CATEGORY = "Prompt Beam/search"
RUNS_SUBFOLDER = "promptbeam"
CANDIDATE_EVENT = "promptbeam.candidate"
RUN_EVENT = "promptbeam.run"             # {node, run_id, url}: the editor shows an "open run viewer" button
VIEWER_ROUTE = "/promptbeam/runs"        # nodes/run_routes.py serves output/promptbeam/ here
DEFAULT_PREVIEW_SIZE = 512
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_IMAGE_SETTINGS = ("width", "height", "steps", "guidance", "sampler", "scheduler")


def preview_size() -> int:
    """ComfyUI's --preview-size (what its own sampler previews use)."""
    try:
        import latent_preview
        return int(getattr(latent_preview, "MAX_PREVIEW_RESOLUTION", DEFAULT_PREVIEW_SIZE))
    except Exception:
        return DEFAULT_PREVIEW_SIZE


def generator_settings(generator) -> dict:
    """Image settings come from the generator node (one place for width, height, steps...): its request defaults
    when it has them, else the matching keys of describe()."""
    defaults = getattr(generator, "defaults", None)
    if defaults is not None:
        source = {name: getattr(defaults, name, None) for name in _IMAGE_SETTINGS}
    else:
        describe = getattr(generator, "describe", None)
        source = describe() if callable(describe) else {}
    return {name: source[name] for name in _IMAGE_SETTINGS if source.get(name) is not None}


def run_id_for(run_name: str):
    """`<run_name>-<YYYYmmdd-HHMMSS>-<hex>`, or None for an automatic id: a new folder for every execution."""
    name = _UNSAFE_NAME.sub("-", (run_name or "").strip()).strip("-.")[:80]
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}" if name else None


def automatic_run_id() -> str:
    """The id RunRecord would pick (`YYYYmmdd-HHMMSS-<hex>`), chosen here so the editor can be told it up front."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _raise_interrupted():
    """End the node the way ComfyUI expects an interrupted node to end (and consume its interrupt flag)."""
    comfy.model_management.throw_exception_if_processing_interrupted()
    raise comfy.model_management.InterruptProcessingException()


class _ComfyProgress:
    """Search callbacks -> ComfyUI: ProgressBar over all images, previews, progress text, interrupt flag."""

    def __init__(self, node_id, images_total: int, run_id: str = None):
        self.node_id = node_id
        self.run_id = run_id
        self._run_announced = False
        self.bar = comfy.utils.ProgressBar(images_total, node_id=node_id)
        self.server = PromptServer.instance
        self.interrupted = False
        self._preview = None
        self._last_candidate = None
        self._preview_size = preview_size()

    def should_stop(self) -> bool:
        return self.interrupted or comfy.model_management.processing_interrupted()

    def on_candidate(self, candidate, image) -> None:
        if image is not None:
            pil = tensor_to_pil(image)
            # ComfyUI resizes a preview to fit max_size, enlarging small ones too: only bound the large ones.
            limit = self._preview_size if max(pil.size) > self._preview_size else None
            self._preview = ("PNG", pil, limit)
        self._last_candidate = candidate
        if self.server is not None:
            self.server.send_sync(CANDIDATE_EVENT, {"node": self.node_id, "candidate": candidate.to_dict()},
                                  getattr(self.server, "client_id", None))

    def announce_run(self) -> None:
        """Tell the editor where the run's page is. Sent with the first progress event: the run directory and
        its report.html exist by then."""
        if self._run_announced or self.run_id is None or self.server is None:
            return
        self._run_announced = True
        self.server.send_sync(RUN_EVENT, {"node": self.node_id, "run_id": self.run_id,
                                          "url": f"{VIEWER_ROUTE}/{self.run_id}/"},
                              getattr(self.server, "client_id", None))

    def on_progress(self, event) -> None:
        self.announce_run()
        text = event.text()
        candidate, self._last_candidate = self._last_candidate, None
        if candidate is not None:
            if candidate.ok:
                s = candidate.scores
                text += (f"\n{candidate.id}: total {s['total']:.1f} (alignment {s['alignment']:.1f}, "
                         f"aesthetic {s['aesthetic']:.2f})")
            else:
                text += f"\n{candidate.id}: failed ({candidate.error})"
        if self.server is not None and self.node_id is not None:
            self.server.send_progress_text(text, self.node_id)
        preview, self._preview = self._preview, None
        try:
            self.bar.update_absolute(event.images_done, event.images_total, preview)
        except comfy.model_management.InterruptProcessingException:
            # ComfyUI's progress hook raises (and clears its flag) on interrupt. Remember it and let the search
            # stop at its next check, so the record is closed properly before the node re-raises.
            self.interrupted = True


def judge_settings(judge) -> dict:
    """The search's judge_budget and judge_margin, as set on the VLM Judge node."""
    if judge is None:
        return {}
    judge = judge_of(judge)
    return {key: value for key, value in (("judge_budget", judge.budget), ("judge_margin", judge.margin))
            if value is not None}


def vision_critic(critic, llm):
    """The critic input, checked before any work: its model must see images. The llm's own model looks inside the
    children request (the same engine), another model is asked first."""
    if critic is None:
        return None
    if not hasattr(critic, "evaluate_image") or not hasattr(critic, "client"):
        raise InvalidParameter("critic", f"expects the output of a Prompt Beam Ollama node, got "
                                         f"{type(critic).__name__}")
    require_vision(critic.client, "critic")
    same = (critic.client.base_url, critic.client.model) == (llm.client.base_url, llm.client.model)
    return llm if same else critic


class PromptBeamSearch(io.ComfyNode):
    """The whole search in one node: a prompt in, the best image (and how to make it again) out."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PromptBeamSearch",
            display_name="Prompt Beam Search",
            category=CATEGORY,
            description="Beam search over LLM-written prompts: expand into WHAT/HOW, render, score, keep the best, "
                        "refine; the full record goes to output/promptbeam/.",
            inputs=[
                io.String.Input("prompt", multiline=True, dynamic_prompts=False,
                                tooltip="What you want to see. The search writes the detailed prompts."),
                LLM.Input("llm", tooltip="From a Prompt Beam Ollama node."),
                GENERATOR.Input("generator", tooltip="From a Prompt Beam Flux Generator node; its width, height, "
                                                     "steps and sampler are used."),
                SCORER.Input("scorer", tooltip="From a Prompt Beam Scorer Loader node."),
                io.Int.Input("beam_width", default=4, min=1, max=64, tooltip="N: candidates rendered per round."),
                io.Int.Input("keep_top", default=2, min=1, max=64,
                             tooltip="M: survivors per round (<= beam_width); each gets N/M children."),
                io.Int.Input("iterations", default=3, min=1, max=50,
                             tooltip="Rounds in total, round 0 (expansion) included."),
                io.Float.Input("alpha", default=0.7, min=0.0, max=1.0, step=0.05,
                               tooltip="total = alpha*alignment + (1-alpha)*10*aesthetic."),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                             tooltip="Run seed: every image and LLM seed derives from it."),
                # Optional inputs are added at the end only: a saved workflow stores widget values by position.
                Choice("dimension_policy", options=["alternate", "adaptive"], default="alternate", optional=True,
                       tooltip="alternate: WHAT on odd rounds, HOW on even; adaptive: each parent's weaker half."),
                Choice("seed_policy", options=["inherit", "fresh"], default="inherit", optional=True,
                       tooltip="inherit: children reuse their parent's image seed."),
                io.Int.Input("patience", default=0, min=0, max=50, optional=True,
                             tooltip="Stop after this many rounds without a better best (0 = off)."),
                io.Float.Input("target_score", default=0.0, min=0.0, max=100.0, step=0.1, optional=True,
                               tooltip="Stop once the best total reaches this (0 = off)."),
                io.Float.Input("time_budget_s", default=0.0, min=0.0, max=604800.0, step=1.0, optional=True,
                               tooltip="Stop after the round during which this many seconds passed (0 = off)."),
                io.Int.Input("descriptiveness", default=2, min=1, max=3, optional=True,
                             tooltip="Prompt length: 1 concise, 2 balanced, 3 descriptive."),
                Choice("style", options=["natural", "booru"], default="natural", optional=True),
                Choice("combine_mode", options=["llm", "template"], default="llm", optional=True,
                       tooltip="How WHAT and HOW become one prompt: an LLM call or a template."),
                io.Boolean.Input("use_negative", default=False, optional=True,
                                 tooltip="Ask the LLM for a negative prompt."),
                io.Boolean.Input("captions", default=False, optional=True,
                                 tooltip="Give the critique a caption of each image (if the scorer can caption)."),
                io.Boolean.Input("low_vram", default=False, optional=True,
                                 tooltip="Unload the Ollama model before rendering each round."),
                io.Boolean.Input("control_arm", default=False, optional=True,
                                 tooltip="Also spend the same image budget on seeds only for round 0's best prompt, "
                                         "and report both bests."),
                io.Int.Input("llm_concurrency", default=4, min=1, max=32, optional=True),
                io.String.Input("score_text", default="", optional=True,
                                tooltip="Text for alignment (empty = the prompt)."),
                io.String.Input("run_name", default="", optional=True,
                                tooltip="Folder name prefix under output/promptbeam/."),
                LLM.Input("critic", optional=True, tooltip=(
                    "A Prompt Beam Ollama node with a vision model: it looks at each parent's image before its "
                    "children are written (the same model as llm: inside that request).")),
                JUDGE.Input("judge", optional=True, tooltip=(
                    "From a Prompt Beam VLM Judge node: compares the candidates near the keep_top cut in pairs, "
                    "both orders, and the survivors follow its verdicts.")),
            ],
            # Outputs are appended, never reordered: saved graphs link them by position.
            outputs=[
                io.Image.Output(display_name="best_image", tooltip="The best image found."),
                io.String.Output(display_name="best_prompt", tooltip="The prompt that made it."),
                io.Image.Output(display_name="finalists", tooltip="The last round's survivors, best first."),
                io.String.Output(display_name="report", tooltip="The run report (JSON), also in report.json."),
                io.Int.Output(display_name="best_seed", tooltip=(
                    "The seed that rendered the best image: with best_prompt and the generator's settings it "
                    "renders the same image again (e.g. larger, or with more steps).")),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, prompt, llm, generator, scorer, beam_width, keep_top, iterations, alpha, seed,
                dimension_policy="alternate", seed_policy="inherit", patience=0, target_score=0.0, time_budget_s=0.0,
                descriptiveness=2, style="natural", combine_mode="llm", use_negative=False, captions=False,
                low_vram=False, control_arm=False, llm_concurrency=4, score_text="", run_name="", critic=None,
                judge=None):
        for name, value, needed in (("llm", llm, "expand"), ("generator", generator, "generate"),
                                    ("scorer", scorer, "score")):
            if value is None or not hasattr(value, needed):
                raise InvalidParameter(name, f"expects a PROMPTBEAM_{name.upper()} input, got {type(value).__name__}")
        config = BeamConfig(
            beam_width=beam_width, keep_top=keep_top, iterations=iterations, alpha=alpha, seed=seed,
            dimension_policy=dimension_policy, seed_policy=seed_policy, patience=patience or None,
            target_score=target_score or None, time_budget_s=time_budget_s or None,
            descriptiveness=descriptiveness, style=style, combine_mode=combine_mode,
            use_negative=bool(use_negative), score_text=(score_text or "").strip() or None,
            captions=bool(captions), low_vram=bool(low_vram or getattr(llm, "low_vram", False)),
            llm_concurrency=llm_concurrency, control_arm=bool(control_arm), **generator_settings(generator),
            **judge_settings(judge),
        ).validate()
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidParameter("prompt", "is empty: describe the image you want")
        critic = vision_critic(critic, llm)
        if judge is not None:
            check_pairwise(judge)

        run_id = run_id_for(run_name) or automatic_run_id()
        progress = _ComfyProgress(cls.hidden.unique_id, config.planned_images, run_id)
        callbacks = SearchCallbacks(on_progress=progress.on_progress, on_candidate=progress.on_candidate,
                                    should_stop=progress.should_stop)
        out_root = os.path.join(folder_paths.get_output_directory(), RUNS_SUBFOLDER)
        try:
            result = BeamSearch(llm, generator, scorer, config, callbacks, critic=critic, judge=judge).run(
                prompt, out_root, run_id)
        except Interrupted as exc:
            log.info("Prompt Beam: %s", exc)
            _raise_interrupted()
        if result.stop_reason == "interrupted" or progress.interrupted:
            log.info("Prompt Beam: interrupted; the record is complete in %s", result.run_dir)
            _raise_interrupted()
        log.info("Prompt Beam: %s after %d rounds, best %s (total %.2f), record in %s", result.stop_reason,
                 len(result.report["iterations"]), result.best.id, result.best.total, result.run_dir)
        report = json.dumps(result.report, ensure_ascii=False)
        return io.NodeOutput(result.best_image.unsqueeze(0), result.best.prompt, result.finalist_images, report,
                             result.best.seed)


NODES = [PromptBeamSearch]
