"""`--comfy-workers`: the CLI side of rendering on ComfyUI servers (search flags and doctor checks).

`search --comfy-workers URL[,URL...] [--render-workflow FILE]` renders every candidate on those ComfyUI servers
(pipeline.generation.comfy_workers) and scores locally; `doctor --comfy-workers ...` checks each worker: reachable, its
version, the workflow's node types (/object_info) and the model files its loaders name (the loaders' lists).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from ..comfy_api.client import ComfyClient, ComfyError, load_workflow
from ..comfy_api.graph import defaults_of, find_roles, loader_files
from ..errors import InvalidParameter
from ..sources import ModelSource as Finding  # one doctor line (same fields as a model source)
from ..sources import fail, ok

DEFAULT_RENDER_WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "api" / "render_flux_worker.json"
DOCTOR_TIMEOUT_S = 10.0


def add_worker_flags(parser: argparse.ArgumentParser, for_doctor: bool = False) -> None:
    group = parser.add_argument_group("ComfyUI workers (render on ComfyUI servers instead of a local Flux)")
    group.add_argument("--comfy-workers", dest="comfy_workers", metavar="URL[,URL...]",
                       help="ComfyUI servers to render on, least-loaded first, all in parallel "
                            "(e.g. http://127.0.0.1:8188,http://127.0.0.1:8189)")
    group.add_argument("--render-workflow", dest="render_workflow", metavar="FILE",
                       help="API-format workflow each worker runs per candidate (default: "
                            "workflows/api/render_flux_worker.json)")
    if not for_doctor:
        group.add_argument("--worker-timeout", dest="worker_timeout", type=float, metavar="SECONDS",
                           help="move a request to another worker when its worker shows no progress for this long "
                                "(300)")


def workflow_path(value: Optional[str]) -> str:
    return str(value) if value else str(DEFAULT_RENDER_WORKFLOW)


def load_render_workflow(path: Optional[str]) -> tuple[dict, object]:
    """The workflow and its roles; InvalidParameter("render_workflow") when it is not a render workflow."""
    try:
        workflow = load_workflow(workflow_path(path))
    except InvalidParameter as exc:
        raise InvalidParameter("render_workflow", str(exc).removeprefix("workflow: ")) from None
    return workflow, find_roles(workflow, name="render_workflow")


def image_defaults(path: Optional[str]) -> dict:
    """BeamConfig fields the render workflow holds (width, height, steps, guidance, sampler, scheduler), so that
    without flags a candidate renders as the workflow does in ComfyUI's editor."""
    workflow, roles = load_render_workflow(path)
    return defaults_of(workflow, roles)


def check_workers(settings: dict) -> None:
    """Parameter checks for search: the URLs parse, the workflow has every role, the timeout is positive."""
    from ..generation.comfy_workers import parse_worker_urls

    settings["comfy_workers"] = parse_worker_urls(settings["comfy_workers"])
    load_render_workflow(settings["render_workflow"])
    if settings.get("worker_timeout") is not None and settings["worker_timeout"] <= 0:
        raise InvalidParameter("worker_timeout", f"must be > 0 seconds, got {settings['worker_timeout']:g}")


def connect_pool(settings: dict, say):
    """The worker pool, after checking that at least one worker answers (so a typo fails before the scorer loads)."""
    from ..generation.comfy_workers import AllWorkersDown, ComfyWorkerPool

    pool = ComfyWorkerPool(settings["comfy_workers"], workflow_path(settings["render_workflow"]),
                           stall_timeout_s=settings.get("worker_timeout") or 300.0)
    answering, problems = [], []
    for url in pool.workers:
        try:
            stats = ComfyClient(url.url, request_timeout=DOCTOR_TIMEOUT_S).system_stats()
            answering.append(f"{url.url} (ComfyUI {(stats.get('system') or {}).get('comfyui_version', '?')})")
        except ComfyError as exc:
            problems.append(f"{url.url}: {exc}")
    if not answering:
        raise AllWorkersDown(f"no ComfyUI worker answers: {'; '.join(problems)}. Start them (python main.py "
                             "--port N) or fix --comfy-workers")
    say(f"ComfyUI workers: {', '.join(answering)}" + (f"; not answering now: {'; '.join(problems)}"
                                                       if problems else ""))
    return pool


# ---------------------------------------------------------------------------------------------------------------
# doctor


def doctor_findings(urls_text: str, workflow: Optional[str]) -> list[tuple[str, Finding]]:
    from ..generation.comfy_workers import parse_worker_urls

    try:
        graph, _roles = load_render_workflow(workflow)
    except InvalidParameter as exc:
        return [("workflow", fail(str(exc), "pass --render-workflow FILE, an API-format render workflow"))]
    findings: list[tuple[str, Finding]] = [
        ("workflow", ok(f"{workflow_path(workflow)}: prompt, sampler, latent and image output found"))]
    try:
        urls = parse_worker_urls(urls_text)
    except InvalidParameter as exc:
        return findings + [("workers", fail(str(exc), "use --comfy-workers URL[,URL...]"))]
    for number, url in enumerate(urls, 1):
        findings.append((f"worker {number}", check_worker(url, graph)))
    return findings


def check_worker(url: str, workflow: dict) -> Finding:
    client = ComfyClient(url, request_timeout=DOCTOR_TIMEOUT_S)
    try:
        stats = client.system_stats()
        info = client.object_info()
    except ComfyError as exc:
        return fail(f"{url}: {exc}", "start ComfyUI there (python main.py --listen --port N) or fix the URL")
    system = stats.get("system") or {}
    devices = ", ".join(str(d.get("name", "?")) for d in stats.get("devices") or []) or "no device listed"
    where = f"{url}: ComfyUI {system.get('comfyui_version', '?')} on {devices}"
    missing_nodes = sorted({node["class_type"] for node in workflow.values() if node["class_type"] not in info})
    if missing_nodes:
        return fail(f"{where}; node types missing: {', '.join(missing_nodes)}",
                    "install the custom node pack(s) that provide them on this worker and restart it")
    missing_files = []
    for node_id, class_type, name, file in loader_files(workflow):
        spec = (((info.get(class_type) or {}).get("input") or {}).get("required") or {}).get(name) \
            or (((info.get(class_type) or {}).get("input") or {}).get("optional") or {}).get(name)
        choices = spec[0] if isinstance(spec, list) and spec and isinstance(spec[0], list) else None
        if choices is not None and file not in choices:
            missing_files.append(f"{file} (node {node_id} {class_type}.{name})")
    if missing_files:
        return fail(f"{where}; model files missing: {', '.join(missing_files)}",
                    "copy them into that worker's models folders (or edit --render-workflow) and refresh")
    return ok(f"{where}; all {len({n['class_type'] for n in workflow.values()})} node types and "
              f"{len(loader_files(workflow))} model files present")
