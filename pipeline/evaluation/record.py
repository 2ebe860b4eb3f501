"""An evaluation's folder: eval.json (rewritten after every judged prompt, atomically), eval.html beside it, and
one run directory per prompt under runs/ (p000, p001, ...: the search's own record, control arm included).

    {schema_version, eval_id, status, settings, judges, plan: [{prompt, category}],
     prompts: [{index, prompt, category, beam: {run_dir, best, image, scores}, control: {best, image, scores},
                verdicts: {JUDGE: beam|control|tie}, verdict, gains: {JUDGE: float},
                judge_scores: {JUDGE: {beam, control}}, notes: {JUDGE: str}, images, seconds}],
     failed: [{index, prompt, category, error}],
     summary: {n, beam_wins, control_wins, ties, win_rate, ci95: [lo, hi], mean_gain: {JUDGE: float}, images,
               seconds, per_judge, by_category}}

Paths inside (run_dir, image) are relative to the eval folder, so it can be moved or zipped whole. `plan` is the
full prompt list: --resume goes on with the prompts not yet in `prompts`.
"""
from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Optional, Sequence

from ..errors import InvalidParameter
from ..record.storage import replacing
from .prompt_sets import PromptItem
from .stats import BOOTSTRAP_SEED, RESAMPLES, summarise

EVAL_NAME = "eval.json"
PAGE_NAME = "eval.html"
RUNS = "runs"
SCHEMA_VERSION = 1


def new_eval_id() -> str:
    return "eval-" + time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def run_id(index: int) -> str:
    return f"p{index:03d}"


class EvalRecord:
    def __init__(self, eval_dir: Path, data: dict):
        self.eval_dir, self.data = Path(eval_dir), data

    @classmethod
    def create(cls, out_root, settings: dict, judges: Sequence[dict], plan: Sequence[PromptItem],
               eval_id: Optional[str] = None) -> "EvalRecord":
        eval_id = eval_id or new_eval_id()
        eval_dir = Path(out_root) / eval_id
        (eval_dir / RUNS).mkdir(parents=True, exist_ok=False)
        data = {"schema_version": SCHEMA_VERSION, "eval_id": eval_id, "status": "running", "settings": settings,
                "judges": list(judges), "plan": [{"prompt": i.prompt, "category": i.category} for i in plan],
                "prompts": [], "failed": [], "summary": None}
        record = cls(eval_dir, data)
        record.save()
        return record

    @classmethod
    def open(cls, eval_dir, flag: str = "resume") -> "EvalRecord":
        path = Path(eval_dir) / EVAL_NAME
        if not path.is_file():
            raise InvalidParameter(flag, f"{eval_dir} has no {EVAL_NAME}, so it is not an eval folder; give the "
                                         "folder the interrupted eval printed")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidParameter(flag, f"{path} cannot be read as JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("plan"), list) or "settings" not in data:
            raise InvalidParameter(flag, f"{path} is not a Prompt Beam eval record (no plan or settings)")
        if data.get("schema_version", 0) > SCHEMA_VERSION:
            raise InvalidParameter(flag, f"{path} was written by a newer Prompt Beam (schema "
                                         f"{data['schema_version']}); resume it with that version")
        return cls(Path(eval_dir), data)

    # ---- contents -----------------------------------------------------------------------------------------------
    @property
    def plan(self) -> list[PromptItem]:
        return [PromptItem(item["prompt"], item.get("category") or "") for item in self.data["plan"]]

    @property
    def runs_dir(self) -> Path:
        return self.eval_dir / RUNS

    def judged(self) -> set:
        return {entry["index"] for entry in self.data["prompts"]}

    def add(self, entry: dict) -> None:
        """A judged prompt (replacing an earlier entry or failure of the same index), then save."""
        index = entry["index"]
        self.data["prompts"] = sorted([e for e in self.data["prompts"] if e["index"] != index] + [entry],
                                      key=lambda e: e["index"])
        self.data["failed"] = [f for f in self.data["failed"] if f["index"] != index]
        self.save()

    def add_failure(self, index: int, item: PromptItem, error: str) -> None:
        """A prompt whose search produced no image to judge: recorded, left out of the summary, tried again on
        --resume."""
        self.data["failed"] = sorted([f for f in self.data["failed"] if f["index"] != index] + [
            {"index": index, "prompt": item.prompt, "category": item.category, "error": error}],
            key=lambda f: f["index"])
        self.save()

    def finish(self, status: str) -> None:
        self.data["status"] = status
        self.save()

    def save(self) -> None:
        bootstrap = self.data["settings"].get("bootstrap") or {}
        self.data["summary"] = summarise(self.data["prompts"], [j["name"] for j in self.data["judges"]],
                                         bootstrap.get("resamples", RESAMPLES), bootstrap.get("seed", BOOTSTRAP_SEED))
        with replacing(self.eval_dir / EVAL_NAME) as handle:
            handle.write(json.dumps(self.data, indent=1, ensure_ascii=False).encode("utf-8"))
        from .page import build_page

        with replacing(self.eval_dir / PAGE_NAME) as handle:
            handle.write(build_page(self.data).encode("utf-8"))
