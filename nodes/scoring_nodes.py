"""ComfyUI nodes for scoring: load a CLIP + aesthetic scorer, score a batch (with previews), keep the best images.

Loaded scorers live in a module-level cache keyed by their settings, so re-running a graph, or two loader nodes
with the same settings, loads the weights once. The loader's `after_use` frees VRAM between uses for cards where
Flux and the scorer do not fit together. Aesthetic heads live in the `aesthetic` model folder (models/aesthetic).
"""
import json
import logging
import os
import re
import uuid

import comfy.model_management
import folder_paths
from comfy_api.v0_0_2 import io

from ..pipeline.config import DEFAULT_CLIP_MODEL, Settings
from ..pipeline.errors import InvalidParameter, PromptBeamError
from ..pipeline.images import tensor_to_pil, to_batch
from ..pipeline.scoring.aesthetic import LAION_FILENAME
from ..pipeline.scoring.scorer import (DEFAULT_ALPHA, caption_images, caption_prompt_for, load_scorer, resolve_device,
                                       resolve_dtype, total_score)
from ..pipeline.scoring.scorer_set import with_rewards
from ..pipeline.scoring.sources import check_scorers, resolve_aesthetic
from .sockets import LLM, SCORER, Choice

log = logging.getLogger(__name__)
CATEGORY = "Prompt Beam/Scoring"
AESTHETIC_FOLDER = "aesthetic"
AFTER_USE = {"keep_loaded": "keep", "offload_to_cpu": "offload", "unload": "unload"}

_SCORERS = {}   # (clip_model, aesthetic path or "v2.5", device, dtype) -> Scorer


def aesthetic_folders():
    """models/aesthetic (plus any extra_model_paths entries), registered on first use as well as at import: a
    reset of folder_paths (tests, some launchers) must not lose it."""
    default = os.path.join(folder_paths.models_dir, AESTHETIC_FOLDER)
    try:
        folders = folder_paths.get_folder_paths(AESTHETIC_FOLDER)
    except KeyError:
        folders = []
    if default not in folders:
        folder_paths.add_model_folder_path(AESTHETIC_FOLDER, default)
        folders = folder_paths.get_folder_paths(AESTHETIC_FOLDER)
    return folders


aesthetic_folders()


def cached_scorer(clip_model, aesthetic_model, device, dtype, scorers=""):
    """The scorer for these settings, loaded once per process."""
    # The scoring part's own verdict on each spec, as `search --scorer` and `doctor --scorer` give it.
    specs = check_scorers([text for text in re.split(r"[\n,]", scorers or "") if text.strip()], flag="scorers")
    if device == "auto":
        device = comfy.model_management.get_torch_device()
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    folders = aesthetic_folders()
    # The scoring part's own rule for where the head comes from (LAION's default: where it will be downloaded).
    aesthetic = resolve_aesthetic(aesthetic_model, folders).require().location
    key = (clip_model.strip(), aesthetic, str(device), str(dtype), tuple(map(str, specs)))
    scorer = _SCORERS.get(key)
    if scorer is None:
        scorer = load_scorer(clip_model.strip(), aesthetic_model=aesthetic, device=device, dtype=dtype,
                             aesthetic_dirs=folders)
        _SCORERS[key] = scorer = with_rewards(scorer, specs)
    return scorer


def release_scorers(mode="unload"):
    """Free every cached scorer ("unload" also forgets them)."""
    for scorer in list(_SCORERS.values()):
        scorer.release(mode)
    if mode == "unload":
        _SCORERS.clear()


def _scorer_defaults():
    try:
        settings = Settings.from_env()
        return settings.clip_model, settings.aesthetic_model or LAION_FILENAME
    except PromptBeamError as exc:   # a bad unrelated variable must not stop the node list from loading
        log.warning("Prompt Beam: ignoring environment for scorer defaults: %s", exc)
        return DEFAULT_CLIP_MODEL, LAION_FILENAME


def _check_scorer(scorer):
    if not all(hasattr(scorer, name) for name in ("score", "describe", "release")):
        raise InvalidParameter("scorer", f"expects the output of a Prompt Beam Scorer Loader, got "
                                         f"{type(scorer).__name__}")
    return scorer


class PromptBeamScorerLoader(io.ComfyNode):
    """CLIP (alignment) + aesthetic predictor in one pass -> a PROMPTBEAM_SCORER, loaded once and cached."""

    @classmethod
    def define_schema(cls):
        clip_model, aesthetic_model = _scorer_defaults()
        return io.Schema(
            node_id="PromptBeamScorerLoader",
            display_name="Prompt Beam Scorer Loader",
            category=CATEGORY,
            description="Loads CLIP + an aesthetic predictor once (cached by settings) for the scoring and search "
                        "nodes.",
            inputs=[
                io.String.Input("clip_model", default=clip_model,
                                tooltip="open_clip id: ARCH/TAG (ViT-L-14/openai), hf-hub:ORG/REPO or local-dir:PATH"),
                io.String.Input("aesthetic_model", default=aesthetic_model, tooltip=(
                    f"file name in models/aesthetic, or a full path, or 'v2.5' (SigLIP predictor). LAION's "
                    f"{LAION_FILENAME} is downloaded there once if missing")),
                Choice("device", options=["auto", "cuda", "cpu"], default="auto"),
                Choice("dtype", options=["auto", "fp16", "bf16", "fp32"], default="auto", optional=True,
                       tooltip="auto = fp16 on CUDA, fp32 on CPU"),
                Choice("after_use", options=list(AFTER_USE), default="keep_loaded", optional=True, tooltip=(
                    "keep_loaded: stay in VRAM; offload_to_cpu: move to RAM after each scoring call (fast to bring "
                    "back); unload: drop the weights after each call (reloaded from disk when needed)")),
                io.String.Input("scorers", default="", optional=True, tooltip=(
                    "what the total ranks by, comma separated: empty or clip = CLIP + aesthetic; pickscore[=SOURCE] "
                    "(hub id or folder), hpsv2[=FILE] (HPS_v2.1_compressed.pt). Alignment and aesthetic are always "
                    "given too")),
            ],
            outputs=[SCORER.Output(display_name="scorer")],
        )

    @classmethod
    def execute(cls, clip_model, aesthetic_model, device, dtype="auto", after_use="keep_loaded", scorers=""):
        if after_use not in AFTER_USE:
            raise InvalidParameter("after_use", f"{after_use!r} is not one of {', '.join(AFTER_USE)}")
        scorer = cached_scorer(clip_model, aesthetic_model, device, dtype, scorers)
        scorer.after_use = AFTER_USE[after_use]
        scorer.release(scorer.after_use)     # honour the choice from now on, not only after the first use
        return io.NodeOutput(scorer)


def scores_report(scores, alpha, prompt, scorer_info=None):
    """The JSON the Score node outputs: per-image scores, the best index, and the best image's scores at the top
    level so a node that expects one {alignment, aesthetic, total} can read it directly."""
    entries = []
    for index, score in enumerate(scores):
        entry = {"index": index, **score.as_dict(alpha)}
        if score.caption:
            entry["caption"] = score.caption
        entries.append(entry)
    best = max(range(len(entries)), key=lambda i: (entries[i]["total"], -i))
    report = {"alpha": alpha, "prompt": prompt, "best": best,
              "alignment": entries[best]["alignment"], "aesthetic": entries[best]["aesthetic"],
              "total": entries[best]["total"], "images": entries}
    if scorer_info:
        report["scorer"] = {"clip_model": scorer_info.get("clip_model"),
                            "aesthetic_model": scorer_info.get("aesthetic_model")}
    return report


def save_previews(images, prefix="promptbeam_score"):
    """PNG previews in ComfyUI's temp folder, listed the way PreviewImage lists them."""
    folder = folder_paths.get_temp_directory()
    os.makedirs(folder, exist_ok=True)
    tag = uuid.uuid4().hex[:10]
    results = []
    for index, image in enumerate(images):
        filename = f"{prefix}_{tag}_{index:03d}.png"
        tensor_to_pil(image).save(os.path.join(folder, filename), compress_level=1)
        results.append({"filename": filename, "subfolder": "", "type": "temp"})
    return results


class PromptBeamScore(io.ComfyNode):
    """Scores each image of a batch against the prompt (one CLIP forward), shows them with their scores."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PromptBeamScore",
            display_name="Prompt Beam Score",
            category=CATEGORY,
            description="CLIP alignment (0-100) and aesthetic (about 1-10) per image, plus a JSON with totals and "
                        "the best.",
            inputs=[
                SCORER.Input("scorer"),
                io.Image.Input("images"),
                io.String.Input("prompt", multiline=True, default="", tooltip=(
                    "the text to score against, usually the user's short prompt (CLIP reads its first 77 tokens)")),
                io.Float.Input("alpha", default=DEFAULT_ALPHA, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="total = alpha*alignment + (1-alpha)*10*aesthetic"),
                LLM.Input("vision_llm", optional=True, tooltip="optional Ollama vision model (llava, qwen2.5vl) that "
                                                               "adds a short caption/critique per image"),
            ],
            outputs=[
                io.Float.Output(display_name="alignment", is_output_list=True),
                io.Float.Output(display_name="aesthetic", is_output_list=True),
                io.String.Output(display_name="scores"),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, scorer, images, prompt, alpha=DEFAULT_ALPHA, vision_llm=None):
        scorer = _check_scorer(scorer)
        if not 0.0 <= float(alpha) <= 1.0:
            raise InvalidParameter("alpha", f"must be between 0 and 1, got {alpha}")
        if not (prompt or "").strip():
            raise InvalidParameter("prompt", "is empty; give the prompt the images should show")
        batch = to_batch(images)
        scores = scorer.score(batch, prompt)
        if vision_llm is not None:
            comfy.model_management.throw_exception_if_processing_interrupted()
            for score, caption in zip(scores, caption_images(vision_llm, batch, caption_prompt_for(prompt))):
                score.caption = caption
        report = scores_report(scores, float(alpha), prompt.strip(), scorer.describe())
        lines = [f"#{e['index']}: alignment {e['alignment']:.2f}  aesthetic {e['aesthetic']:.2f}  "
                 f"total {e['total']:.2f}" + ("  (best)" if e["index"] == report["best"] else "")
                 for e in report["images"]]
        return io.NodeOutput([s.alignment for s in scores], [s.aesthetic for s in scores],
                             json.dumps(report, ensure_ascii=False),
                             ui={"images": save_previews(batch), "text": ["\n".join(lines)]})


def parse_totals(scores_json, count):
    """Totals per image from a Score node's JSON (also accepts a plain list of numbers or of score dicts)."""
    try:
        data = json.loads(scores_json)
    except (TypeError, json.JSONDecodeError) as exc:
        raise InvalidParameter("scores", f"is not JSON ({getattr(exc, 'msg', exc)}); connect a Score node's "
                                         "scores output") from None
    alpha = data.get("alpha", DEFAULT_ALPHA) if isinstance(data, dict) else DEFAULT_ALPHA
    entries = data.get("images") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise InvalidParameter("scores", "expected the Score node's JSON (an object with an 'images' list)")
    totals = []
    for position, entry in enumerate(entries):
        if isinstance(entry, (int, float)) and not isinstance(entry, bool):
            totals.append(float(entry))
        elif isinstance(entry, dict) and isinstance(entry.get("total"), (int, float)):
            totals.append(float(entry["total"]))
        elif isinstance(entry, dict) and all(isinstance(entry.get(k), (int, float)) for k in ("alignment",
                                                                                              "aesthetic")):
            totals.append(total_score(entry["alignment"], entry["aesthetic"], alpha))
        else:
            raise InvalidParameter("scores", f"entry {position} has no total (or alignment and aesthetic)")
    if len(totals) != count:
        raise InvalidParameter("scores", f"has {len(totals)} entries but the batch has {count} images; connect the "
                                         "scores of this same batch")
    return totals


class PromptBeamSelectBest(io.ComfyNode):
    """Keeps the top_k images of a batch by total score, best first."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PromptBeamSelectBest",
            display_name="Prompt Beam Select Best",
            category=CATEGORY,
            description="The top_k images by total score (ties keep batch order) and their indices as a JSON list.",
            inputs=[
                io.Image.Input("images"),
                io.String.Input("scores", force_input=True, tooltip="the scores output of a Score node"),
                io.Int.Input("top_k", default=1, min=1, max=4096,
                             tooltip="how many to keep (more than the batch keeps them all, sorted)"),
            ],
            outputs=[io.Image.Output(display_name="images"), io.String.Output(display_name="indices")],
        )

    @classmethod
    def execute(cls, images, scores, top_k):
        batch = to_batch(images)
        if int(top_k) < 1:
            raise InvalidParameter("top_k", f"must be at least 1, got {top_k}")
        totals = parse_totals(scores, batch.shape[0])
        order = sorted(range(len(totals)), key=lambda i: (-totals[i], i))[:int(top_k)]
        return io.NodeOutput(batch[order], json.dumps(order))


NODES = [PromptBeamScorerLoader, PromptBeamScore, PromptBeamSelectBest]
