"""The run directory: report.json (rewritten atomically after every change) and one PNG per candidate.

Layout (docs/report-schema.md documents every field):
    <root>/<run_id>/report.json
    <root>/<run_id>/report.html                   the same record as a page (record/page.py)
    <root>/<run_id>/i{iteration}c{index}.png      one per rendered candidate, text metadata inside
    <root>/<run_id>/control_{j}.png               images of the equal-budget control arm, when enabled

A candidate's entry and image are on disk before the next candidate is recorded, so an interrupt or a crash
loses at most the candidate in flight, and `BeamSearch.resume` can continue from the file. The entry is in
report.json or, until report.json is next rewritten, in report.journal (record/journal.py: the cost of recording
a candidate stays the same however large the record grows); `RunRecord.open` reads both.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import torch
from PIL import Image

from .. import __version__
from ..errors import InvalidParameter, PromptBeamError
from ..images import pil_to_tensor
from .candidate import Candidate
from .journal import Journal, load_report, snapshot_due
from .pnginfo import PARAMETERS_KEY, a1111_parameters, candidate_text, load_png_pixels, rewrite_png_text, save_png
from .page import write_page
from .storage import RecordNotWritable, page_not_written, replacing, storage_failure
from .run_index import RUN_ID

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
REPORT_NAME = "report.json"
_RUN_ID = RUN_ID       # one rule for run folder names, shared with the run list and the ComfyUI routes
PathLike = Union[str, os.PathLike]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunRecord:
    """One run directory and its report (a plain dict, mirrored to report.json on every save)."""

    def __init__(self, run_dir: Path, report: dict):
        self.run_dir = Path(run_dir)
        self.report = report
        self._index = {entry["id"]: i for i, entry in enumerate(report["candidates"])}
        self._journal = Journal(self.run_dir)

    # ---- creation -----------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: PathLike, user_prompt: str, config: dict, run_id: Optional[str] = None,
               replay_of: Optional[dict] = None) -> "RunRecord":
        root = Path(root)
        if run_id is not None and not _RUN_ID.fullmatch(run_id):
            raise InvalidParameter(
                "run_id", f"{run_id!r} must be 1-128 letters, digits, '.', '_' or '-' (it names a folder)")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _raise_if_not_writable(exc, root / (run_id or ""), started=False)
            raise
        if run_id is None:
            run_dir = _fresh_dir(root, time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3))
        else:
            run_dir = root / run_id
            try:
                run_dir.mkdir()
            except FileExistsError:
                raise InvalidParameter(
                    "run_id", f"{run_dir} already exists: choose another name, or resume that run") from None
            except OSError as exc:
                _raise_if_not_writable(exc, run_dir, started=False)
                raise
        report = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_dir.name,
            "user_prompt": user_prompt,
            "config": config,
            "status": "running",
            "stop_reason": None,
            "error": None,
            "candidates": [],
            "iterations": [],
            "pending": None,
            "best": None,
            "lineage": [],
            "finalists": [],
            "images": {"budget": None, "rendered": 0, "failed": 0},
            "llm": {"calls": 0, "fallbacks": 0},
            "timings": {"llm_s": 0.0, "generate_s": 0.0, "score_s": 0.0, "wall_s": 0.0,
                        "started_at": _now(), "updated_at": _now(), "rounds": []},
            "control": None,
            "judgements": [],
            "replay_of": replay_of,
            "warnings": [],
            "version": __version__,
        }
        record = cls(run_dir, report)
        try:
            record.save()
        except OSError as exc:
            with contextlib.suppress(OSError):
                run_dir.rmdir()          # nothing was recorded: leave no empty run directory behind
            _raise_if_not_writable(exc, run_dir, started=False)
            raise
        return record

    @classmethod
    def open(cls, run_dir: PathLike) -> "RunRecord":
        run_dir = Path(run_dir)
        path = run_dir / REPORT_NAME
        if not path.is_file():
            raise InvalidParameter("run_dir", f"{run_dir} has no {REPORT_NAME}: not a Prompt Beam run directory")
        try:
            report = load_report(run_dir)             # report.json and the changes journaled after it
        except json.JSONDecodeError as exc:
            raise PromptBeamError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except ValueError as exc:
            raise PromptBeamError(str(exc)) from None
        if report.get("schema_version") != SCHEMA_VERSION:
            raise PromptBeamError(
                f"{path} has schema_version {report.get('schema_version')!r}; this version reads {SCHEMA_VERSION}")
        return cls(run_dir, report)

    # ---- candidates ---------------------------------------------------------------------------------------------
    def write_pngs(self, items: Sequence[tuple[Candidate, torch.Tensor]], extra_text: Optional[dict] = None) -> None:
        """Write the PNGs of a batch of rendered candidates and point each candidate at its file (their report
        entries follow through add_candidate). zlib releases the GIL, so the images encode on as many cores."""
        if not items:
            return
        with ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1)) as pool:
            list(pool.map(lambda item: self._write_png(*item, extra_text), items))   # list(): re-raise failures

    def _write_png(self, candidate: Candidate, image: torch.Tensor, extra_text: Optional[dict] = None) -> None:
        candidate.image = f"{candidate.id}.png"
        save_png(self.run_dir / candidate.image, image, {**self._png_text(candidate), **(extra_text or {})})

    def add_candidate(self, candidate: Candidate, image: Optional[torch.Tensor] = None) -> None:
        """Record a finished (ok or failed) candidate: its PNG first when `image` is given (a batch written by
        write_pngs is not passed again), then its report entry, then save."""
        if image is not None:
            self._write_png(candidate, image)
        entry = candidate.to_dict()
        if candidate.id in self._index:
            self.report["candidates"][self._index[candidate.id]] = entry
        else:
            self._index[candidate.id] = len(self.report["candidates"])
            self.report["candidates"].append(entry)
        # A candidate whose prompt the LLM could not write was never sent to the generator.
        entries = self.report["candidates"]
        self.report["images"]["rendered"] = sum(1 for c in entries if c.get("failed_stage") != "llm")
        self.report["images"]["failed"] = sum(1 for c in entries if c["status"] == "failed")
        self._commit({"candidate": entry, "set": {"images": self.report["images"]}})

    def candidates(self) -> list[Candidate]:
        return [Candidate.from_dict(entry) for entry in self.report["candidates"]]

    def candidate(self, candidate_id: str) -> Candidate:
        return Candidate.from_dict(self.report["candidates"][self._index[candidate_id]])

    def has_candidate(self, candidate_id: str) -> bool:
        return candidate_id in self._index

    def load_image(self, name: str) -> torch.Tensor:
        """A recorded image ([H, W, 3] float in [0, 1]) by file name."""
        return pil_to_tensor(load_png_pixels(self.run_dir / name))

    # ---- round bookkeeping --------------------------------------------------------------------------------------
    def set_pending(self, plan: Optional[Iterable[Candidate]], iteration: Optional[int] = None,
                    duplicates: Optional[list] = None, dimension: Optional[str] = None,
                    planned_parents: Optional[list] = None) -> None:
        """The planned candidates of the round in flight (not all rendered), or None. `planned_parents` is given
        while the round's LLM work is still streaming in: the parents whose children are planned so far (the
        others are asked for again on resume); None means the whole round is planned."""
        if plan is None:
            self.report["pending"] = None
        else:
            self.report["pending"] = {"iteration": iteration, "dimension": dimension,
                                      "candidates": [c.to_dict() for c in plan], "duplicates": duplicates or []}
            if planned_parents is not None:
                self.report["pending"]["planned_parents"] = list(planned_parents)
        self._commit({"set": {"pending": self.report["pending"]}})

    def add_iteration(self, entry: dict, best: Optional[tuple[str, list[str], list[str]]] = None) -> None:
        """Close a round in one save: its entry replaces the pending plan, and `best` ((best_id, lineage,
        finalists), as for set_best) is the best it leaves."""
        self.report["pending"] = None
        self.report["iterations"].append(entry)
        if best is not None:
            self._point_at_best(*best)
        self._commit({"iteration": entry, "set": self._fields("pending", "best", "lineage", "finalists", "timings",
                                                              "llm", "images")})

    def set_best(self, best_id: str, lineage: list[str], finalists: list[str]) -> None:
        """Point the report at the current best; move the A1111 `parameters` chunk to the new best's PNG."""
        self._point_at_best(best_id, lineage, finalists)
        self._commit({"set": self._fields("best", "lineage", "finalists")})

    def _point_at_best(self, best_id: str, lineage: list[str], finalists: list[str]) -> None:
        previous = self.report.get("best")
        self.report["best"] = best_id
        self.report["lineage"] = list(lineage)
        self.report["finalists"] = list(finalists)
        if previous != best_id:
            if previous is not None and self.has_candidate(previous):
                self._retag_png(self.candidate(previous), is_best=False)
            self._retag_png(self.candidate(best_id), is_best=True)

    def add_judgement(self, entry: dict) -> None:
        """Record one pair a judge decided (report["judgements"]); a pair already on record for the same round is
        kept as it is (a resumed round reuses its verdicts)."""
        judgements = self.report.setdefault("judgements", [])
        key = (entry["iteration"], frozenset((entry["a"], entry["b"])))
        if any((j["iteration"], frozenset((j["a"], j["b"]))) == key and not j.get("error") for j in judgements):
            return
        judgements.append(dict(entry))
        self._commit({"set": self._fields("judgements")})      # a few pairs a round: the whole list is small

    def update(self, **fields) -> None:
        """Set top-level fields (timings, control, llm, images, ...) and save."""
        self.report.update(fields)
        self._commit({"set": self._fields(*fields)})

    def warn(self, message: str) -> None:
        self.report["warnings"].append(message)
        self._commit({"set": self._fields("warnings")})

    def finish(self, stop_reason: Optional[str], status: str, error: Optional[str] = None) -> None:
        self.report["stop_reason"] = stop_reason
        self.report["status"] = status
        self.report["error"] = error
        self.save()

    # ---- files --------------------------------------------------------------------------------------------------
    def _fields(self, *names: str) -> dict:
        return {name: self.report[name] for name in names}

    def _commit(self, change: dict) -> None:
        """Make a change durable before returning: a line in the journal, or, when one is due (record/journal.py),
        a rewrite of report.json that includes it."""
        if snapshot_due(self._journal.lines + 1, len(self.report["candidates"])):
            self.save()
        else:
            self._journal.append(change)

    def save(self) -> None:
        """Atomic rewrite: readers see the old or the new report.json, never a torn one. The journal is emptied
        after the rename (a crash in between replays changes report.json already has: harmless)."""
        self.report["timings"]["updated_at"] = _now()
        with replacing(self.run_dir / REPORT_NAME) as handle:
            text = io.TextIOWrapper(handle, encoding="utf-8")
            json.dump(self.report, text, indent=2, ensure_ascii=False)
            text.flush()
            text.detach()        # the handle stays open for replacing() to sync and rename
        self._journal.clear()
        self._write_page()

    def _write_page(self) -> None:
        """report.html follows every save. It is derived from report.json, so a failure to write it never ends the
        search (the viewer rebuilds a missing or stale page from report.json): it is said in one line, once until
        it changes, with the traceback only in debug logging (--debug)."""
        try:
            write_page(self.run_dir, self.report)
        except Exception as exc:
            log.debug("could not write %s/report.html", self.run_dir, exc_info=True)
            problem = page_not_written(self.run_dir, exc)
            if problem != getattr(self, "_page_problem", None):
                log.warning("%s", problem)
            self._page_problem = problem
        else:
            self._page_problem = None

    def _png_text(self, candidate: Candidate, best_size: Optional[tuple[int, int]] = None) -> dict:
        """A candidate's PNG text; given the image's (width, height), also the winner's A1111 `parameters`."""
        text = candidate_text(candidate, self.report["run_id"], self.report["user_prompt"])
        if best_size is not None:
            width, height = best_size
            text[PARAMETERS_KEY] = a1111_parameters(candidate.prompt, candidate.negative,
                                                    self.a1111_settings(candidate.seed, width, height))
        return text

    def _retag_png(self, candidate: Candidate, is_best: bool) -> None:
        if not candidate.image or not (self.run_dir / candidate.image).is_file():
            return
        path = self.run_dir / candidate.image
        # Reads the chunks before the pixels only: save_png and rewrite_png_text put the text there.
        with Image.open(path) as image:
            size, tagged = image.size, PARAMETERS_KEY in image.info
        if tagged != is_best:
            rewrite_png_text(path, self._png_text(candidate, size if is_best else None))

    def a1111_settings(self, seed: int, width: int, height: int) -> dict:
        """A1111 "Key: value" settings of one image, from the run's config and the generator's description."""
        config = self.report.get("config", {})
        generator = config.get("generator") or {}
        model = generator.get("model") or generator.get("name")
        if isinstance(model, str) and ("/" in model or os.sep in model) and os.path.exists(model):
            model = Path(model).name
        sampler = config.get("sampler") or generator.get("sampler") or generator.get("sampler_name") or "Euler"
        scheduler = config.get("scheduler") or generator.get("scheduler")
        return {
            "Steps": generator.get("steps", config.get("steps")),
            "Sampler": sampler,
            "Schedule type": scheduler,
            "CFG scale": 1,   # Flux is guidance-distilled: no classifier-free guidance pass
            "Distilled CFG Scale": generator.get("guidance", config.get("guidance")),
            "Seed": seed,
            "Size": f"{width}x{height}",
            "Model": model,
            "Version": f"Prompt Beam {__version__}",
        }


def _raise_if_not_writable(exc: OSError, run_dir: Path, started: bool) -> None:
    failure = storage_failure(exc, run_dir) or storage_failure(exc, run_dir.parent)
    if failure is not None:
        raise RecordNotWritable(run_dir, failure, 0, None, started=started) from exc


def _fresh_dir(root: Path, stem: str) -> Path:
    for attempt in range(1000):
        run_dir = root / (stem if attempt == 0 else f"{stem}-{attempt + 1}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
        except OSError as exc:
            _raise_if_not_writable(exc, run_dir, started=False)
            raise
    raise PromptBeamError(f"could not create a new run directory under {root}")
