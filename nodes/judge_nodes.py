"""ComfyUI nodes for the vision judges: a pairwise judge (Ollama vision model) for Prompt Beam Search, and the same
judge ranking a batch of images by hand.

Creating the judge contacts no server, like the Ollama node: graphs validate and cache offline. Whatever uses it
first asks Ollama whether the model sees images (two at once for a pairwise judge) and refuses it before any work.
"""
import json

import comfy.model_management
import comfy.utils
import torch
from comfy_api.v0_0_2 import io

from ..pipeline.beam.config import BeamConfig
from ..pipeline.beam.judging import VerdictGraph, rank_images
from ..pipeline.errors import InvalidParameter
from ..pipeline.llm.client import DEFAULT_KEEP_ALIVE, DEFAULT_TIMEOUT_S, OllamaClient
from ..pipeline.llm.operations import PromptEngine
from ..pipeline.llm.vision import MAX_SIDE, PairwiseJudge, require_vision
from .llm_nodes import ollama_defaults
from .sockets import JUDGE

CATEGORY = "Prompt Beam/Judges"


def judge_of(judge, name: str = "judge") -> PairwiseJudge:
    """The PROMPTBEAM_JUDGE socket carries a PairwiseJudge; check by behaviour (the pack may be loaded twice)."""
    if not all(hasattr(judge, attr) for attr in ("ask", "encode", "judgement", "engine")):
        raise InvalidParameter(name, f"expects the output of a Prompt Beam VLM Judge node, got {type(judge).__name__}")
    return judge


def check_pairwise(judge, name: str = "judge") -> PairwiseJudge:
    """Refuse, before any work, a judge whose model cannot see two images a request (asks Ollama's /api/show)."""
    require_vision(judge_of(judge, name).engine.client, name, images=2)
    return judge


class PromptBeamVLMJudge(io.ComfyNode):
    """An Ollama vision model that compares two images for your prompt, both orders -> a PROMPTBEAM_JUDGE."""

    @classmethod
    def define_schema(cls):
        base_url, _ = ollama_defaults()
        defaults = BeamConfig()
        return io.Schema(
            node_id="PromptBeamVLMJudge",
            display_name="Prompt Beam VLM Judge",
            category=CATEGORY,
            description="A vision model (Ollama) that compares candidates in pairs, both orders, and re-orders the "
                        "ones near Prompt Beam Search's keep_top cut. Nothing is contacted until first use.",
            inputs=[
                io.String.Input("base_url", default=base_url, tooltip="Ollama server address (OLLAMA_BASE_URL)"),
                io.String.Input("model", default=ollama_defaults(vision=True)[1],
                                tooltip="a vision model that takes two images a request: qwen2.5vl, qwen3-vl, "
                                        "gemma3, minicpm-v (VLM_MODEL); llama3.2-vision takes one and is refused"),
                io.Int.Input("budget", default=defaults.judge_budget, min=0, max=64,
                             tooltip="pairs the judge may decide a round (two requests each); 0 = off"),
                io.Float.Input("margin", default=defaults.judge_margin, min=0.0, max=10.0, step=0.1,
                               tooltip="judge the candidates whose total is within this many standard deviations "
                                       "of the round's totals from the keep_top cut"),
                io.Float.Input("timeout", default=DEFAULT_TIMEOUT_S, min=1.0, max=3600.0, step=1.0, optional=True,
                               tooltip="seconds for one answer; a judge that times out leaves the round to the "
                                       "scores (recorded)"),
                io.Int.Input("max_side", default=MAX_SIDE, min=128, max=2048, step=16, optional=True,
                             tooltip="longest side of the images sent to the model (pixels)"),
                io.String.Input("keep_alive", default=DEFAULT_KEEP_ALIVE, optional=True,
                                tooltip="how long Ollama keeps the model loaded: '5m', '0' (unload after each "
                                        "call), '-1' (keep)"),
            ],
            outputs=[JUDGE.Output(display_name="judge")],
        )

    @classmethod
    def execute(cls, base_url, model, budget, margin, timeout=DEFAULT_TIMEOUT_S, max_side=MAX_SIDE,
                keep_alive=DEFAULT_KEEP_ALIVE):
        client = OllamaClient(base_url, model, timeout=timeout, keep_alive=keep_alive)
        return io.NodeOutput(PairwiseJudge(PromptEngine(client), budget=budget, margin=margin, max_side=max_side))


class PromptBeamCompareImages(io.ComfyNode):
    """Rank a batch of images with a vision judge alone: every pair both orders, skipping pairs already decided."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PromptBeamCompareImages",
            display_name="Prompt Beam Compare Images",
            category=CATEGORY,
            description="Ranks an image batch for a prompt with a pairwise vision judge (both orders, ties when "
                        "they disagree); outputs the batch best first and the ranking as JSON.",
            inputs=[
                JUDGE.Input("judge", tooltip="From a Prompt Beam VLM Judge node."),
                io.Image.Input("images", tooltip="The images to rank (a batch of two or more)."),
                io.String.Input("prompt", multiline=True, dynamic_prompts=False,
                                tooltip="What the images should show: the judge compares them against it."),
                io.Int.Input("max_pairs", default=0, min=0, max=496, optional=True,
                             tooltip="most pairs to ask (two requests each); 0 = every pair that earlier verdicts "
                                     "do not already decide"),
            ],
            outputs=[
                io.Image.Output(display_name="ranked", tooltip="The batch, best first."),
                io.String.Output(display_name="ranking", tooltip=(
                    "JSON: order (batch indices, best first), wins (net judged wins per index) and every pair's "
                    "judgement with both answers.")),
            ],
        )

    @classmethod
    def execute(cls, judge, images, prompt, max_pairs=0):
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidParameter("prompt", "is empty: say what the images should show")
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] < 1:
            raise InvalidParameter("images", "expects an IMAGE batch")
        judge = check_pairwise(judge)
        pictures = list(images)
        bar = comfy.utils.ProgressBar(max(1, len(pictures) * (len(pictures) - 1) // 2))

        def on_pair(done: int, total: int) -> None:
            comfy.model_management.throw_exception_if_processing_interrupted()
            bar.update_absolute(done, total)

        names = [f"image {i}" for i in range(len(pictures))]
        order, judgements = rank_images(judge, prompt.strip(), pictures, names=names, budget=max_pairs or None,
                                        on_pair=on_pair)
        graph = VerdictGraph(judgements)           # the net wins the order follows, chains of wins included
        ranking = {"order": order, "wins": [graph.net_wins(name, names) for name in names], "model": judge.model,
                   "judgements": judgements}
        return io.NodeOutput(images[order], json.dumps(ranking, ensure_ascii=False))


NODES = [PromptBeamVLMJudge, PromptBeamCompareImages]
