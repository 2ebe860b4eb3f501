"""Which models and backends a search uses, decided before any of them loads: from the flags, then (for
--resume) what the run recorded, then the environment; checked flag by flag (cli/checks.py, the parts' own
`sources`), and written back into the record so that --resume finds the same ones.
"""
from __future__ import annotations

import argparse
import dataclasses

from ..config import LoraSpec, Settings
from ..errors import InvalidParameter
from . import checks, remote, scorers, workers


def backend_urls(args: argparse.Namespace, recorded: dict) -> dict:
    """The Flux and vision service URLs (cli/remote.py). ComfyUI workers take the Flux service's place: a
    FLUX_API_URL in the environment yields to --comfy-workers, an explicit --flux-url beside it is refused."""
    urls = remote.service_urls(args, recorded)
    if getattr(args, "comfy_workers", None) or recorded.get("comfy_workers"):
        if getattr(args, "flux_url", None) not in (None, remote.IN_PROCESS):
            raise InvalidParameter("flux_url", "renders on the Flux service and --comfy-workers on ComfyUI "
                                               "servers: give one of them")
        urls["flux_url"] = None
    return urls


def model_settings(args: argparse.Namespace, recorded: dict, env: Settings) -> dict:
    """Which models to load: a flag wins, then (on --resume) what the run recorded, then the environment."""
    def pick(flag: str, env_value):
        value = getattr(args, flag, None)
        return value if value is not None else recorded.get(flag, env_value)

    if args.lora is not None:
        loras = [LoraSpec.parse_cli(text) for text in args.lora]
    elif "lora" in recorded:
        loras = [LoraSpec.from_dict(item) for item in recorded["lora"]]
    else:
        loras = list(env.flux_loras)
    return {"ollama_url": pick("ollama_url", env.ollama_base_url), "llm_model": pick("llm_model", env.ollama_model),
            "flux": pick("flux", env.flux_model), "flux_base": pick("flux_base", None), "loras": loras,
            "clip": pick("clip", env.clip_model), "aesthetic": pick("aesthetic", env.aesthetic_model),
            "caption_model": pick("caption_model", None), "critic_model": pick("critic_model", None),
            "judge_model": pick("judge_model", None), "device": args.device, "offload": bool(args.offload),
            "comfy_workers": pick("comfy_workers", None), "render_workflow": pick("render_workflow", None),
            "worker_timeout": getattr(args, "worker_timeout", None),
            "true_cfg": pick("true_cfg", None),
            **scorers.scorer_settings(args, recorded),
            "compile": bool(getattr(args, "compile", False)), "fp8": bool(getattr(args, "fp8", False)),
            "compile_cache": getattr(args, "compile_cache", None),
            **backend_urls(args, recorded)}


def check_models(settings: dict, lora_flag: str) -> None:
    """Every file and name the models need, without loading one. Cheapest first: CLIP checks import open_clip."""
    settings["device"] = checks.check_device(settings["device"], flag="device")
    if settings.get("comfy_workers"):         # the workers render: no local Flux to check
        workers.check_workers(settings)
    elif not settings.get("flux_url"):        # with the Flux service, the service checks its model and LoRAs
        checks.check_flux(settings["flux"], settings["flux_base"], flag="flux")
        checks.check_loras(settings["loras"], flag=lora_flag)
    if settings["offload"] and not settings.get("comfy_workers") and not settings.get("flux_url"):
        from ..generation.diffusers_flux import pick_device  # the generator's own device choice when none is given

        if pick_device(settings["device"]).type == "cpu":
            raise InvalidParameter("offload", "moves Flux's parts to the GPU only while they run; this run is on "
                                              "the CPU")
    scorers.check_scorer_settings(settings, models=not settings.get("vision_url"))
    check_speed_flags(settings)
    if settings.get("vision_url"):         # the vision service has loaded its own models
        return
    checks.check_clip(settings["clip"], flag="clip")
    checks.check_aesthetic(settings["aesthetic"], flag="aesthetic")
    checks.check_head_fits_clip(settings["aesthetic"], settings["clip"], flag="aesthetic")


def check_speed_flags(settings: dict) -> None:
    """--compile / --fp8 speed up the in-process diffusers generator only; --fp8 needs a GPU with fp8 and torchao."""
    if not (settings.get("compile") or settings.get("fp8")):
        return
    elsewhere = "--comfy-workers" if settings.get("comfy_workers") else "--flux-url" if settings.get("flux_url") else None
    if elsewhere:
        raise InvalidParameter("compile", f"speeds up Flux in this process, but {elsewhere} renders elsewhere: start "
                                          "the Flux service with --compile, or compile in ComfyUI (docs/performance.md)")
    if settings.get("fp8"):
        from ..generation.diffusers_flux import pick_device
        from ..generation.speedups import check_fp8

        check_fp8(pick_device(settings["device"]), settings.get("compile"))


def recorded_models(report: dict) -> dict:
    """The model choices a run was started with: this command writes them under config["cli"]; for runs started
    elsewhere (a script calling BeamSearch) the components' own descriptions are the fallback."""
    config = report.get("config") or {}
    cli = config.get("cli")
    if isinstance(cli, dict):
        names = {"ollama_url": "ollama_url", "llm_model": "llm_model", "flux": "flux", "flux_base": "flux_base",
                 "clip": "clip", "aesthetic": "aesthetic", "caption_model": "caption_model", "loras": "lora",
                 "critic_model": "critic_model", "judge_model": "judge_model",
                 "comfy_workers": "comfy_workers", "render_workflow": "render_workflow",
                 "true_cfg": "true_cfg", "scorers": "scorer", "hps_arch": "hps_arch",
                 "flux_url": "flux_url", "vision_url": "vision_url"}
        return {flag: cli[key] for key, flag in names.items() if cli.get(key) is not None}
    found = {}
    llm = config.get("llm") or {}
    generator = config.get("generator") or {}
    scorer = config.get("scorer") or {}
    for flag, value in (("ollama_url", llm.get("base_url")), ("llm_model", llm.get("model")),
                        ("clip", scorer.get("clip_model")), ("aesthetic", scorer.get("aesthetic_model"))):
        if value:
            found[flag] = value
    if generator.get("backend") == "diffusers-flux":
        found["flux"] = generator.get("model")
        if generator.get("base"):
            found["flux_base"] = generator["base"]
        found["lora"] = [{"path": l["path"], "weight": l.get("weight", 1.0), "trigger": l.get("trigger", "")}
                         for l in generator.get("loras") or []]
        if generator.get("true_cfg_scale"):
            found["true_cfg"] = generator["true_cfg_scale"]
    return found


def record_cli_settings(search, settings: dict) -> None:
    """Put the model choices in the record, so that --resume reloads the same models without flags."""
    s = settings
    search.extra_config["cli"] = {"llm_model": s["llm_model"], "ollama_url": s["ollama_url"], "flux": s["flux"],
                                  "flux_base": s["flux_base"], "clip": s["clip"], "aesthetic": s["aesthetic"],
                                  "caption_model": s["caption_model"], "true_cfg": s["true_cfg"],
                                  "critic_model": s["critic_model"], "judge_model": s["judge_model"],
                                  "scorers": s["scorers"], "hps_arch": s["hps_arch"],
                                  "loras": [dataclasses.asdict(lora) for lora in s["loras"]],
                                  # "in-process" rather than null, so --resume keeps the backends the run used
                                  "flux_url": s.get("flux_url") or remote.IN_PROCESS,
                                  "vision_url": s.get("vision_url") or remote.IN_PROCESS}
    if s.get("comfy_workers"):
        search.extra_config["cli"].update(comfy_workers=",".join(s["comfy_workers"]),
                                          render_workflow=workers.workflow_path(s["render_workflow"]))
