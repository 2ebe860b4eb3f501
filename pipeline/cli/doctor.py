"""`python -m pipeline doctor`: is everything a search needs in place? One line per check, a fix for each failure.

Nothing is loaded: Ollama is asked over HTTP, model files are looked up on disk and in the Hugging Face cache.
Exit 0 when no check fails ("warn" lines, such as a model the first run will download, do not fail).
"""
from __future__ import annotations

import argparse
import re
import sys
import traceback
from typing import Optional

from ..config import LoraSpec, Settings
from ..errors import InvalidParameter
from ..sources import ModelSource as Finding  # one line of the checklist, model or not (same fields)
from ..sources import fail, ok, warn
from . import remote, scorers, workers
from .exit_codes import EXIT_FAILURE, EXIT_OK

LABEL_WIDTH = 10
MARKS = {"ok": "[ok]  ", "warn": "[warn]", "fail": "[FAIL]"}
# (import name, distribution name) of what a standalone search needs besides torch.
PACKAGES = (("diffusers", "diffusers"), ("transformers", "transformers"), ("open_clip", "open_clip_torch"),
            ("safetensors", "safetensors"), ("requests", "requests"), ("tqdm", "tqdm"),
            ("websocket", "websocket-client"))


def add_parser(commands, parents) -> argparse.ArgumentParser:
    p = commands.add_parser(
        "doctor", parents=parents, help="check Ollama, torch, and the model files a search would use",
        description="Checks what `search` would use with the same flags and environment, without loading models.")
    p.add_argument("--ollama-url", dest="ollama_url", metavar="URL", help="Ollama server (OLLAMA_BASE_URL)")
    p.add_argument("--llm-model", dest="llm_model", metavar="NAME", help="Ollama model (OLLAMA_MODEL)")
    p.add_argument("--flux", metavar="ID|DIR|FILE", help="Flux model (FLUX_MODEL)")
    p.add_argument("--flux-base", dest="flux_base", metavar="ID|DIR", help="components for a single-file --flux")
    p.add_argument("--lora", action="append", metavar="PATH[:WEIGHT[:TRIGGER]]", help="LoRA file (FLUX_LORAS)")
    p.add_argument("--clip", metavar="ID", help="open_clip model (CLIP_MODEL)")
    p.add_argument("--aesthetic", metavar="PATH", help="aesthetic head (AESTHETIC_MODEL)")
    p.add_argument("--caption-model", dest="caption_model", metavar="NAME",
                   help="also check this Ollama vision model (for search --captions)")
    scorers.add_scorer_flags(p)
    remote.add_arguments(p)
    workers.add_worker_flags(p, for_doctor=True)
    return p


def line(label: str, finding: Finding) -> str:
    text = f"{MARKS[finding.status]} {label:<{LABEL_WIDTH}}{finding.detail}"
    if finding.fix and finding.status != "ok":
        text += f"  → {'fix' if finding.status == 'fail' else 'note'}: {finding.fix}"
    return text


def load_settings() -> tuple[Settings, Optional[Finding]]:
    """The environment's settings; a malformed variable becomes a failing line, not an abort."""
    import os

    env = dict(os.environ)
    try:
        return Settings.from_env(env), None
    except InvalidParameter as exc:
        env.pop(exc.name, None)
        return Settings.from_env(env), fail(str(exc), f"fix or unset {exc.name}")


def check_ollama(url: str, model: str, choose_with: str = "--llm-model / OLLAMA_MODEL") -> Finding:
    from ..llm.client import OllamaClient, OllamaError, OllamaModelNotFound, OllamaUnreachable

    try:
        client = OllamaClient(url, model, timeout=10, retries=0)
    except InvalidParameter as exc:
        return fail(str(exc), "pass --ollama-url http://HOST:11434 or set OLLAMA_BASE_URL")
    try:
        client.check()
    except OllamaModelNotFound as exc:
        installed = ", ".join(exc.installed) or "none"
        return fail(f"{client.base_url}: reachable, but model {client.model} is not pulled (installed: {installed})",
                    f"`ollama pull {client.model}`, or pick an installed model with {choose_with}")
    except OllamaUnreachable as exc:
        reason = re.search(r"\(([^;)]+)", str(exc))
        return fail(f"{client.base_url}: not reachable ({reason.group(1) if reason else exc})",
                    "start it with `ollama serve` (or open the Ollama app), or point --ollama-url / "
                    "OLLAMA_BASE_URL at where it runs")
    except OllamaError as exc:
        return fail(" ".join(str(exc).split()), "check the Ollama server log")
    return ok(f"{client.base_url}: reachable, model {client.model} pulled")


def check_loras(flags: Optional[list], settings: Settings) -> Finding:
    try:
        loras = [LoraSpec.parse_cli(text) for text in flags] if flags is not None else list(settings.flux_loras)
    except InvalidParameter as exc:
        return fail(str(exc), "use PATH[:WEIGHT[:TRIGGER]]")
    from ..generation.sources import resolve_loras

    return resolve_loras(loras)


def resolve_model(part: str, resolver: str, *specs) -> Finding:
    """A part's own resolve step (pipeline.<part>.sources), imported here so that a missing torch or open_clip
    is one failing line rather than an abort."""
    import importlib

    return getattr(importlib.import_module(f"..{part}.sources", __package__), resolver)(*specs)


def check_torch() -> Finding:
    try:
        import torch
    except ImportError:
        return fail("torch is not installed", "install torch first (https://pytorch.org), then "
                                              "`pip install -r requirements.txt`")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        count = torch.cuda.device_count()
        more = f" (+{count - 1} more)" if count > 1 else ""
        return ok(f"{torch.__version__}, CUDA {torch.version.cuda}: {props.name}, "
                  f"{props.total_memory / 2**30:.1f} GiB{more}")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return ok(f"{torch.__version__}, Apple MPS")
    slow = "Flux at 1024x1024 takes minutes per image on a CPU"
    if torch.version.cuda:
        return warn(f"{torch.__version__}, CPU only (CUDA {torch.version.cuda} build, but no GPU visible)",
                    f"{slow}; check `nvidia-smi` and CUDA_VISIBLE_DEVICES")
    return warn(f"{torch.__version__}, CPU only (CPU build of torch)",
                f"{slow}; for an NVIDIA GPU install a CUDA build of torch (https://pytorch.org)")


def check_fp8() -> Finding:
    """--fp8 (optional): does the installed torchao match torch, and does the GPU have fp8? Which torchao to get."""
    import torch

    from ..generation.speedups import FP8_MIN_CAPABILITY, torchao_for, torchao_problem

    wanted = torchao_for(torch.__version__)
    problem = torchao_problem(torch.__version__)
    if not torch.cuda.is_available():
        return ok("not used here: --fp8 needs an NVIDIA GPU with fp8 (Ada, Hopper or newer)")
    capability = torch.cuda.get_device_capability(0)
    name = f"{torch.cuda.get_device_name(0)} (compute capability {capability[0]}.{capability[1]})"
    if capability < FP8_MIN_CAPABILITY:
        return warn(f"{name} has no fp8: --fp8 is not available on this GPU", "leave --fp8 out (--compile still helps)")
    if problem:
        fix = f"pip install torchao=={wanted}" if wanted else "install the torchao release built for this torch"
        return warn(f"{name} has fp8, but {problem.split(':')[0]}", f"{fix} to use --fp8")
    from importlib import metadata

    return ok(f"torchao {metadata.version('torchao')} matches torch {torch.__version__}; {name} has fp8: "
              "--compile --fp8 available")


def check_packages() -> Finding:
    """Installed or not, from package metadata: importing diffusers/open_clip here would cost seconds."""
    from importlib import metadata, util

    found, missing = [], []
    for module, distribution in PACKAGES:
        if util.find_spec(module) is None:
            missing.append(distribution)
            continue
        try:
            found.append(f"{module} {metadata.version(distribution)}")
        except metadata.PackageNotFoundError:
            found.append(module)
    if missing:
        return fail(f"missing: {', '.join(missing)}", "`pip install -r requirements.txt`")
    return ok(", ".join(found))


def run(args: argparse.Namespace) -> int:
    settings, env_problem = load_settings()
    results: list[tuple[str, Finding]] = []

    def report(label: str, check, *check_args) -> None:
        try:
            finding = check(*check_args)
        except ImportError as exc:           # e.g. open_clip missing: the packages line says how to install it
            finding = fail(f"cannot check: {exc}", "`pip install -r requirements.txt`")
        except Exception as exc:             # a diagnostic tool must finish its list whatever one check hits
            if args.debug:
                traceback.print_exc()
            finding = fail(f"the check itself failed: {type(exc).__name__}: {exc}",
                           "" if args.debug else "rerun with --debug for the traceback")
        results.append((label, finding))
        print(line(label, finding), flush=True)

    if env_problem:
        report("env", lambda: env_problem)
    url = args.ollama_url or settings.ollama_base_url
    model = args.llm_model or settings.ollama_model
    report("ollama", check_ollama, url, model)
    if args.caption_model:
        report("captions", check_ollama, url, args.caption_model, "--caption-model")
    report("torch", check_torch)
    report("packages", check_packages)
    try:
        urls = remote.service_urls(args, {})
    except InvalidParameter as exc:
        urls = {"flux_url": None, "vision_url": None}
        problem = fail(str(exc), f"fix {exc.name}")
        report("services", lambda: problem)
    if args.comfy_workers:                    # the workers render: check them instead of a local Flux
        for label, finding in workers.doctor_findings(args.comfy_workers, args.render_workflow):
            report(label, lambda found=finding: found)
    elif urls["flux_url"]:                    # search would use the Flux service: check it, not local model files
        report("flux", remote.inspect_service, "flux", urls["flux_url"])
    else:                                     # Flux in this process: --fp8 would apply here
        report("fp8", check_fp8)
        report("flux", resolve_model, "generation", "resolve_flux", args.flux or settings.flux_model, args.flux_base)
        report("loras", check_loras, args.lora, settings)
    if urls["vision_url"]:
        report("vision", remote.inspect_service, "vision", urls["vision_url"])
    else:
        report("clip", resolve_model, "scoring", "resolve_clip", args.clip or settings.clip_model)
        report("aesthetic", resolve_model, "scoring", "resolve_aesthetic", args.aesthetic or settings.aesthetic_model)
    if args.scorer or args.hps_arch:         # the scorers a search with these flags ranks by, one line each
        for label, finding in scorers.doctor_findings(args.scorer, args.hps_arch, args.clip or settings.clip_model,
                                                      args.aesthetic or settings.aesthetic_model, urls["vision_url"]):
            report(label, lambda found=finding: found)
    failed = [label for label, finding in results if finding.status == "fail"]
    if failed:
        print(f"{len(failed)} check(s) failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
